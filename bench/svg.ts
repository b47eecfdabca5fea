/** A small-multiples SVG line chart (log-log), one panel per series group; no dependencies. */

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

function escape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
