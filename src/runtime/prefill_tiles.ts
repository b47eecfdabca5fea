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
