/**
 * The query tiles of a prefill chunk: the chunk's rows come as segments (consecutive positions of
 * one sequence, consecutive rows of the chunk), and the prefill kernel takes them in tiles of at
 * most `qTile` rows, each tile one sequence. Tiles are ordered by descending last position, so
 * the blocks with the most keys to read start first and the short ones fill the tail of the grid.
 *
 * Pure (no FFI): tested on the CPU.
 */

/** Rows [row0, row0 + rows) of the chunk hold positions [pos0, pos0 + rows) of sequence `seq`. */
export interface PrefillSegment {
  readonly row0: number;
  readonly seq: number;
  readonly pos0: number;
  readonly rows: number;
}

/** One sequence's share of a prefill chunk: `rows` prompt tokens starting at prompt index `offset`. */
export interface ChunkPart {
  readonly seq: number;
  readonly offset: number;
  readonly rows: number;
}

/**
 * How prompts of `lengths` tokens go through prefill chunks of at most `maxRows` rows: each chunk
 * takes, sequence by sequence in order, as many of each prompt's remaining tokens as still fit,
 * so short prompts share a chunk and a long one spans several.
 */
export function prefillChunks(lengths: readonly number[], maxRows: number): ChunkPart[][] {
  if (!(Number.isInteger(maxRows) && maxRows > 0)) {
    throw new RangeError(`prefillChunks: maxRows must be a positive integer, got ${maxRows}`);
  }
  const next = lengths.map(() => 0);
  const chunks: ChunkPart[][] = [];
  while (next.some((at, seq) => at < lengths[seq])) {
    const chunk: ChunkPart[] = [];
    let room = maxRows;
    for (let seq = 0; seq < lengths.length && room > 0; seq++) {
      const rows = Math.min(lengths[seq] - next[seq], room);
      if (rows <= 0) continue;
      chunk.push({ seq, offset: next[seq], rows });
      next[seq] += rows;
      room -= rows;
    }
    chunks.push(chunk);
  }
  return chunks;
}

/** The tile table: 4 ints per tile {first row, sequence, first position, rows}. */
export function prefillTiles(segments: readonly PrefillSegment[], qTile: number): Int32Array {
  if (!(Number.isInteger(qTile) && qTile > 0)) {
    throw new RangeError(`prefillTiles: qTile must be a positive integer, got ${qTile}`);
  }
  const tiles: [number, number, number, number][] = [];
  for (const s of segments) {
    if (!(s.rows >= 0 && s.row0 >= 0 && s.pos0 >= 0 && s.seq >= 0)) {
      throw new RangeError(`prefillTiles: invalid segment ${JSON.stringify(s)}`);
    }
    for (let i = 0; i < s.rows; i += qTile) {
      tiles.push([s.row0 + i, s.seq, s.pos0 + i, Math.min(qTile, s.rows - i)]);
    }
  }
  tiles.sort((a, b) => b[2] + b[3] - (a[2] + a[3]) || a[0] - b[0]);
  return Int32Array.from(tiles.flat());
}

/** Multiply-adds of causal attention over the tiles (QK^T and PV), for TFLOP/s reports. */
export function prefillFlops(
  tiles: Int32Array,
  numQHeads: number,
  headDim: number,
): number {
  let pairs = 0;
  for (let i = 0; i < tiles.length; i += 4) {
    const pos0 = tiles[i + 2], rows = tiles[i + 3];
    // Row at position p attends p + 1 keys.
    pairs += rows * pos0 + (rows * (rows + 1)) / 2;
  }
  return 4 * pairs * numQHeads * headDim;
}
