/**
 * Small SVG charts for the result files, no dependencies: a small-multiples line chart (log-log,
 * one panel per series group) and a scatter chart with a highlighted front. Pure.
 */

export interface Series {
  readonly panel: string;
  readonly name: string;
  readonly points: readonly { x: number; y: number }[];
}

const COLORS = ["#444444", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

export function lineChart(title: string, series: readonly Series[]): string {
  const panels = [...new Set(series.map((s) => s.panel))];
  const names = [...new Set(series.map((s) => s.name))];
  const cols = 3, pw = 320, ph = 220, pad = 46;
  const rows = Math.ceil(panels.length / cols);
  const width = cols * pw, height = rows * ph + 60;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="18" font-size="14">${escape(title)}</text>`,
  ];
  names.forEach((n, i) => {
    const x = 10 + i * 170;
    out.push(`<rect x="${x}" y="30" width="14" height="3" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${x + 18}" y="35">${escape(n)}</text>`);
  });
  panels.forEach((panel, p) => {
    const ox = (p % cols) * pw, oy = 50 + Math.floor(p / cols) * ph;
    const inPanel = series.filter((s) => s.panel === panel && s.points.length > 0);
    const xs = inPanel.flatMap((s) => s.points.map((q) => q.x));
    const ys = inPanel.flatMap((s) => s.points.map((q) => q.y)).filter((y) => y > 0);
    out.push(`<text x="${ox + pad}" y="${oy + 12}">${escape(panel)}</text>`);
    if (xs.length === 0 || ys.length === 0) return;
    const [x0, x1] = [Math.log10(Math.min(...xs)), Math.log10(Math.max(...xs)) + 1e-9];
    const [y0, y1] = [
      Math.floor(Math.log10(Math.min(...ys))),
      Math.ceil(Math.log10(Math.max(...ys)) + 1e-9),
    ];
    const sx = (x: number) => ox + pad + ((Math.log10(x) - x0) / (x1 - x0 || 1)) * (pw - pad - 10);
    const sy = (y: number) => oy + ph - 28 - ((Math.log10(y) - y0) / (y1 - y0 || 1)) * (ph - 50);
    out.push(
      `<rect x="${ox + pad}" y="${oy + 20}" width="${pw - pad - 10}" height="${
        ph - 48
      }" fill="none" stroke="#ccc"/>`,
    );
    for (let e = y0; e <= y1; e++) {
      out.push(
        `<text x="${ox + 4}" y="${sy(10 ** e) + 4}">${
          10 ** e >= 1 ? 10 ** e : (10 ** e).toPrecision(1)
        } ms</text>`,
      );
    }
    for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
      out.push(
        `<text x="${sx(x) - 10}" y="${oy + ph - 12}">${x >= 1024 ? `${x / 1024}K` : x}</text>`,
      );
    }
    for (const s of inPanel) {
      const color = COLORS[names.indexOf(s.name) % COLORS.length];
      const pts = [...s.points].sort((a, b) => a.x - b.x).map((q) =>
        `${sx(q.x).toFixed(1)},${sy(q.y).toFixed(1)}`
      );
      out.push(
        `<polyline fill="none" stroke="${color}" stroke-width="1.6" points="${pts.join(" ")}"/>`,
      );
    }
  });
  out.push("</svg>");
  return out.join("\n");
}

/** One point of a scatter chart. */
export interface ScatterPoint {
  readonly x: number;
  readonly y: number;
  /** Short text drawn beside the point (only for highlighted points). */
  readonly label?: string;
  /** Drawn larger, in the front colour, joined by the front's step line. */
  readonly highlight?: boolean;
}

export interface ScatterOptions {
  readonly xLabel: string;
  readonly yLabel: string;
  /** Vertical reference lines (e.g. loss bounds), with their captions. */
  readonly xMarks?: readonly { x: number; label: string }[];
}

/**
 * A linear scatter chart: every point grey, highlighted points red and joined in x order (a
 * Pareto front reads as a staircase from the lower left to the upper right).
 */
export function scatterChart(
  title: string,
  points: readonly ScatterPoint[],
  opts: ScatterOptions,
): string {
  const width = 760, height = 480, left = 64, right = 24, top = 44, bottom = 52;
  const xs = [...points.map((p) => p.x), ...(opts.xMarks ?? []).map((m) => m.x)];
  const ys = points.map((p) => p.y);
  const [x0, x1] = niceRange(xs), [y0, y1] = niceRange(ys);
  const sx = (x: number) => left + ((x - x0) / (x1 - x0)) * (width - left - right);
  const sy = (y: number) => height - bottom - ((y - y0) / (y1 - y0)) * (height - top - bottom);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="18" font-size="14">${escape(title)}</text>`,
    `<rect x="${left}" y="${top}" width="${width - left - right}" height="${
      height - top - bottom
    }" fill="none" stroke="#ccc"/>`,
  ];
  for (const t of ticks(x0, x1)) {
    out.push(`<text x="${sx(t) - 8}" y="${height - bottom + 16}">${tickText(t)}</text>`);
  }
  for (const t of ticks(y0, y1)) {
    out.push(`<text x="${left - 40}" y="${sy(t) + 4}">${tickText(t)}</text>`);
  }
  out.push(
    `<text x="${left + (width - left - right) / 2 - 60}" y="${height - 14}">${
      escape(opts.xLabel)
    }</text>`,
    `<text x="14" y="${top + (height - top - bottom) / 2}" transform="rotate(-90 14 ${
      top + (height - top - bottom) / 2
    })">${escape(opts.yLabel)}</text>`,
  );
  for (const m of opts.xMarks ?? []) {
    out.push(
      `<line x1="${sx(m.x).toFixed(1)}" y1="${top}" x2="${sx(m.x).toFixed(1)}" y2="${
        height - bottom
      }" stroke="#999" stroke-dasharray="4 3"/>`,
      `<text x="${sx(m.x) + 3}" y="${top + 12}" fill="#666">${escape(m.label)}</text>`,
    );
  }
  const front = points.filter((p) => p.highlight).sort((a, b) => a.x - b.x || a.y - b.y);
  if (front.length > 1) {
    const pts = front.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
    out.push(`<polyline fill="none" stroke="#d62728" stroke-width="1.2" points="${pts}"/>`);
  }
  for (const p of points.filter((p) => !p.highlight)) {
    out.push(
      `<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="3" fill="#999999"/>`,
    );
  }
  for (const p of front) {
    out.push(
      `<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="4.5" fill="#d62728"/>`,
    );
    if (p.label) {
      out.push(
        `<text x="${sx(p.x) + 6}" y="${sy(p.y) - 6}" fill="#d62728">${escape(p.label)}</text>`,
      );
    }
  }
  out.push("</svg>");
  return out.join("\n");
}

/** [min, max] of `values` widened to whole tick steps (a span of 1 around a single value). */
function niceRange(values: readonly number[]): [number, number] {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return [0, 1];
  let lo = Math.min(...finite), hi = Math.max(...finite);
  if (hi - lo < 1e-12) [lo, hi] = [lo - 0.5, hi + 0.5];
  const step = tickStep(lo, hi);
  return [Math.floor(lo / step) * step, Math.ceil(hi / step) * step];
}

function tickStep(lo: number, hi: number): number {
  const raw = (hi - lo) / 6;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
}

function ticks(lo: number, hi: number): number[] {
  const step = tickStep(lo, hi);
  const out: number[] = [];
  for (let t = lo; t <= hi + step / 2; t += step) out.push(Math.round(t / step) * step);
  return out;
}

function tickText(t: number): string {
  return Math.abs(t) >= 100 || Number.isInteger(t) ? String(Math.round(t)) : t.toPrecision(2);
}

function escape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
