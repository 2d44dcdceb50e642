// Pictures for the demo project's elements, drawn here so the page ships no image files: each
// becomes a small PNG data URL, which is also what a generation would send as the element's
// reference image (`image: {data_url}`) until a library image is chosen for it.

const SIZE = 192;

function sky(ctx, [top, bottom]) {
  const gradient = ctx.createLinearGradient(0, 0, 0, SIZE);
  gradient.addColorStop(0, top);
  gradient.addColorStop(1, bottom);
  ctx.fillStyle = gradient;
  ctx.fillRect(0, 0, SIZE, SIZE);
}

function portrait(ctx, art) {
  sky(ctx, art.sky);
  // sun disc behind the head
  ctx.fillStyle = "rgba(255,255,255,0.35)";
  ctx.beginPath();
  ctx.arc(SIZE * 0.5, SIZE * 0.42, SIZE * 0.34, 0, Math.PI * 2);
  ctx.fill();
  // shoulders
  ctx.fillStyle = art.cloth;
  ctx.beginPath();
  ctx.ellipse(SIZE * 0.5, SIZE * 1.02, SIZE * 0.42, SIZE * 0.34, 0, Math.PI, 0);
  ctx.fill();
  // neck
  ctx.fillStyle = art.skin;
  ctx.fillRect(SIZE * 0.44, SIZE * 0.5, SIZE * 0.12, SIZE * 0.2);
  // hair behind
  ctx.fillStyle = art.hair;
  ctx.beginPath();
  ctx.ellipse(SIZE * 0.5, SIZE * 0.4, SIZE * 0.19, SIZE * 0.22, 0, 0, Math.PI * 2);
  ctx.fill();
  // face
  ctx.fillStyle = art.skin;
  ctx.beginPath();
  ctx.ellipse(SIZE * 0.5, SIZE * 0.43, SIZE * 0.15, SIZE * 0.18, 0, 0, Math.PI * 2);
  ctx.fill();
  // fringe
  ctx.fillStyle = art.hair;
  ctx.beginPath();
  ctx.ellipse(SIZE * 0.5, SIZE * 0.3, SIZE * 0.17, SIZE * 0.08, 0, Math.PI, 0);
  ctx.fill();
  // eyes
  ctx.fillStyle = "#2a1f1a";
  for (const x of [0.44, 0.56]) {
    ctx.beginPath();
    ctx.arc(SIZE * x, SIZE * 0.43, SIZE * 0.013, 0, Math.PI * 2);
    ctx.fill();
  }
}

function waves(ctx, color, top) {
  ctx.fillStyle = color;
  ctx.fillRect(0, top, SIZE, SIZE - top);
  ctx.strokeStyle = "rgba(255,255,255,0.25)";
  ctx.lineWidth = 2;
  for (let y = top + 10; y < SIZE; y += 14) {
    ctx.beginPath();
    for (let x = 0; x <= SIZE; x += 8) ctx.lineTo(x, y + Math.sin((x + y) / 9) * 2);
    ctx.stroke();
  }
}

function harbour(ctx, art) {
  sky(ctx, art.sky);
  waves(ctx, art.sea, SIZE * 0.62);
  ctx.fillStyle = art.land;
  const houses = [
    [0.06, 0.42, 0.16],
    [0.25, 0.36, 0.14],
    [0.43, 0.46, 0.15],
    [0.62, 0.33, 0.13],
    [0.78, 0.44, 0.16],
  ];
  for (const [x, y, w] of houses) {
    const left = SIZE * x;
    const width = SIZE * w;
    ctx.fillRect(left, SIZE * y, width, SIZE * (0.6 - y));
    ctx.beginPath(); // roof
    ctx.moveTo(left - 3, SIZE * y);
    ctx.lineTo(left + width / 2, SIZE * (y - 0.08));
    ctx.lineTo(left + width + 3, SIZE * y);
    ctx.fill();
    ctx.fillRect(left + width * 0.2, SIZE * 0.6, 3, SIZE * 0.14); // stilts
    ctx.fillRect(left + width * 0.75, SIZE * 0.6, 3, SIZE * 0.14);
  }
  ctx.fillStyle = "rgba(255,230,160,0.9)"; // lit windows
  for (const [x, y, w] of houses) ctx.fillRect(SIZE * (x + w / 2) - 4, SIZE * (y + 0.07), 8, 8);
}

function lighthouse(ctx, art) {
  sky(ctx, art.sky);
  waves(ctx, art.sea, SIZE * 0.7);
  ctx.fillStyle = art.land; // basalt spur
  ctx.beginPath();
  ctx.moveTo(SIZE * 0.3, SIZE);
  ctx.lineTo(SIZE * 0.42, SIZE * 0.66);
  ctx.lineTo(SIZE * 0.66, SIZE * 0.64);
  ctx.lineTo(SIZE * 0.86, SIZE);
  ctx.fill();
  ctx.fillStyle = "#f2efe8"; // tower
  ctx.beginPath();
  ctx.moveTo(SIZE * 0.47, SIZE * 0.66);
  ctx.lineTo(SIZE * 0.5, SIZE * 0.26);
  ctx.lineTo(SIZE * 0.6, SIZE * 0.26);
  ctx.lineTo(SIZE * 0.63, SIZE * 0.66);
  ctx.fill();
  ctx.fillStyle = "#b8433a"; // bands
  ctx.fillRect(SIZE * 0.485, SIZE * 0.4, SIZE * 0.13, SIZE * 0.05);
  ctx.fillRect(SIZE * 0.475, SIZE * 0.54, SIZE * 0.15, SIZE * 0.05);
  ctx.fillStyle = "#ffd27a"; // the lamp and its beam
  ctx.fillRect(SIZE * 0.51, SIZE * 0.19, SIZE * 0.08, SIZE * 0.07);
  ctx.fillStyle = "rgba(255,210,122,0.35)";
  ctx.beginPath();
  ctx.moveTo(SIZE * 0.55, SIZE * 0.22);
  ctx.lineTo(0, SIZE * 0.08);
  ctx.lineTo(0, SIZE * 0.3);
  ctx.fill();
  ctx.fillStyle = "#2a2a33";
  ctx.fillRect(SIZE * 0.5, SIZE * 0.16, SIZE * 0.1, SIZE * 0.03);
}

const PAINTERS = { portrait, harbour, lighthouse };

/** A PNG data URL picturing the element, from its `art` description. */
export function drawElement(element) {
  const canvas = document.createElement("canvas");
  canvas.width = SIZE;
  canvas.height = SIZE;
  const ctx = canvas.getContext("2d");
  (PAINTERS[element.art?.kind] ?? portrait)(ctx, element.art ?? { sky: ["#eee", "#bbb"], skin: "#d9a980", cloth: "#555", hair: "#333" });
  return canvas.toDataURL("image/png");
}
