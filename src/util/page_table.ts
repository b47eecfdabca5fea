import { ContextFullError } from "./errors.ts";

/**
 * Host bookkeeping of a paged cache: which physical pages each sequence owns (its block table),
 * its length, and the free list. The CPU reference cache and the GPU runtime both use it, so the
 * layout the kernels see is the layout the reference reads.
 */
export class PageTable {
  /** blockTables[seq * maxPagesPerSeq + i] = physical page of the sequence's i-th page, or -1. */
  readonly blockTables: Int32Array;
  /** Tokens held by each sequence. */
  readonly seqLens: Int32Array;
  readonly #free: number[];
  /** Bumped whenever a block table entry changes, so device copies know when to re-upload. */
  version = 0;

  /**
   * Empty block tables over a pool of free pages.
   *
   * @param numSeqs sequences (block tables)
   * @param numPages physical pages in the pool
   * @param pageSize tokens per page
   * @param maxPagesPerSeq length of each block table
   */
  constructor(
    readonly numSeqs: number,
    readonly numPages: number,
    readonly pageSize: number,
    readonly maxPagesPerSeq: number,
  ) {
    this.blockTables = new Int32Array(numSeqs * maxPagesPerSeq).fill(-1);
    this.seqLens = new Int32Array(numSeqs);
    // Pop from the end: hand out pages in ascending order first, which keeps dumps readable.
    this.#free = Array.from({ length: numPages }, (_, i) => numPages - 1 - i);
  }

  /** Pages not owned by any sequence. */
  get freePages(): number {
    return this.#free.length;
  }

  /** The longest sequence a block table can hold. */
  get maxTokensPerSeq(): number {
    return this.maxPagesPerSeq * this.pageSize;
  }

  /**
   * Checks that every sequence b can grow by `counts[b]` tokens at once (block-table room and
   * free pages), changing nothing; throws ContextFullError naming the first that cannot. Callers
   * that grow several sequences and then launch work call it first, so a full context is refused
   * before anything is half done.
   */
  checkGrowth(counts: ArrayLike<number>): void {
    let pagesNeeded = 0, growing = 0, last = 0;
    for (let seq = 0; seq < counts.length; seq++) {
      if (counts[seq] === 0) continue;
      growing++;
      last = seq;
      this.#checkSeq(seq);
      const start = this.seqLens[seq];
      const end = start + counts[seq];
      if (!Number.isInteger(counts[seq]) || counts[seq] < 0) {
        throw new RangeError(`sequence ${seq}: cannot grow by ${counts[seq]} tokens`);
      }
      if (end > this.maxTokensPerSeq) {
        throw new ContextFullError(
          `sequence ${seq}: ${end} tokens exceed its maximum context of ${this.maxTokensPerSeq} ` +
            `tokens (${this.maxPagesPerSeq} pages of ${this.pageSize}); refused before any launch`,
        );
      }
      pagesNeeded += Math.ceil(end / this.pageSize) - Math.ceil(start / this.pageSize);
    }
    if (pagesNeeded > this.#free.length) {
      throw new ContextFullError(
        `${growing === 1 ? `sequence ${last}` : `${growing} sequences`} needs ${pagesNeeded} ` +
          `more pages, only ${this.#free.length} free`,
      );
    }
  }

  /** Reserves room for `count` more tokens of `seq`; returns the position of the first. */
  grow(seq: number, count = 1): number {
    this.#checkSeq(seq);
    const start = this.seqLens[seq];
    const end = start + count;
    const counts = new Int32Array(seq + 1);
    counts[seq] = count;
    this.checkGrowth(counts);
    const needPages = Math.ceil(end / this.pageSize);
    const have = Math.ceil(start / this.pageSize);
    for (let i = have; i < needPages; i++) {
      this.blockTables[seq * this.maxPagesPerSeq + i] = this.#free.pop()!;
      this.version++;
    }
    this.seqLens[seq] = end;
    return start;
  }

  /** Physical page and row of token `pos` of `seq`. */
  locate(seq: number, pos: number): { page: number; row: number } {
    this.#checkSeq(seq);
    if (pos < 0 || pos >= this.seqLens[seq]) {
      throw new RangeError(`sequence ${seq}: position ${pos} outside [0, ${this.seqLens[seq]})`);
    }
    const page = this.blockTables[seq * this.maxPagesPerSeq + Math.floor(pos / this.pageSize)];
    return { page, row: pos % this.pageSize };
  }

  /** Frees every page of `seq` and empties it. */
  release(seq: number): void {
    this.#checkSeq(seq);
    for (let i = 0; i < this.maxPagesPerSeq; i++) {
      const slot = seq * this.maxPagesPerSeq + i;
      if (this.blockTables[slot] >= 0) {
        this.#free.push(this.blockTables[slot]);
        this.version++;
      }
      this.blockTables[slot] = -1;
    }
    this.seqLens[seq] = 0;
  }

  /** Shuffles the free list so tests see sequences scattered over non-adjacent pages. */
  scrambleFreeList(random: () => number): void {
    const f = this.#free;
    for (let i = f.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [f[i], f[j]] = [f[j], f[i]];
    }
  }

  #checkSeq(seq: number): void {
    if (!Number.isInteger(seq) || seq < 0 || seq >= this.numSeqs) {
      throw new RangeError(`sequence index ${seq} outside [0, ${this.numSeqs})`);
    }
  }
}
