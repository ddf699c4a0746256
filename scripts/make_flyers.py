"""Synthetic 小广告 flyers composited onto real wall images, with ground truth.

A flyer is rendered with a CJK font (coloured paper, an ad headline with typical keywords, a phone number,
sometimes a QR-like block), warped in perspective onto a quad of a wall image, shaded with the wall's own
lighting, blurred and noised like a CCTV frame.

API (used by the tests)::

    rng = np.random.default_rng(0)
    flyer, truth = make_flyer(rng)                      # BGRA uint8, dict
    quad = random_quad(rng, (x1, y1, x2, y2), flyer.shape[1] / flyer.shape[0], width=110)
    image = composite(wall_bgr, flyer, quad)

CLI (writes ``flyer_NNN.jpg`` + ``flyer_NNN.json``; frames of the corridor clip by default)::

    python scripts/make_flyers.py --out /tmp/flyers --n 30 --region 120,20,380,225

Needs a CJK font: any of :data:`FONT_CANDIDATES` or one ``fc-list :lang=zh`` reports (Debian:
``fonts-droid-fallback``, ``fonts-noto-cjk`` or ``fonts-wqy-zenhei``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)

LATIN_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/opentype/urw-base35/NimbusSans-Bold.otf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
)
"""Fonts for digits and Latin letters when the CJK font has none (Droid Sans Fallback)."""

HEADLINES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "locksmith": (("专业开锁", ("开锁",)), ("开锁换锁", ("开锁", "换锁"))),
    "plumbing": (("管道疏通", ("管道疏通",)), ("疏通下水道", ("疏通",))),
    "certificates": (("办证刻章", ("办证", "刻章")), ("代开发票", ("代开发票",))),
    "loans": (("无抵押贷款", ("贷款",)), ("快速贷款", ("贷款",))),
    "jobs": (("高薪招聘", ("高薪", "招聘")), ("兼职日结", ("兼职", "日结"))),
    "rental": (("房屋出租", ("出租",)), ("单间出租", ("出租",))),
    "recycling": (("高价回收", ("高价回收",)),),
    "moving": (("搬家搬运", ("搬家", "搬运")),),
    "housekeeping": (("家政保洁", ("家政", "保洁")),),
    "repair": (("家电维修", ("家电维修",)), ("空调维修", ("空调维修",))),
}
SUBLINES = ("24小时上门服务", "价格优惠 随叫随到", "诚信经营 快速上门", "全市服务", "欢迎来电咨询")
PAPERS = ((255, 255, 255), (120, 230, 255), (200, 200, 255), (255, 230, 200), (200, 255, 210),
          (40, 40, 220))
"""Paper colours (BGR): white, yellow, pink, light blue, light green, red (with white ink)."""


@lru_cache(maxsize=1)
def find_cjk_font() -> str | None:
    """Path of a font with Chinese glyphs, or None."""
    for p in FONT_CANDIDATES:
        if Path(p).is_file():
            return p
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        path = line.split(":")[0].strip()
        if path and Path(path).is_file():
            return path
    return None


def _has_digits(font_path: str) -> bool:
    """Whether the font has real digit glyphs (not the same 'missing glyph' box for '0' and '8')."""
    f = ImageFont.truetype(font_path, 20)
    zero, eight = np.asarray(f.getmask("0")), np.asarray(f.getmask("8"))
    return not (zero.shape == eight.shape and bool((zero == eight).all()))


@lru_cache(maxsize=8)
def latin_font_for(cjk_path: str) -> str:
    """The font to draw ASCII with: the CJK font itself when it has digits, else a Latin font."""
    if _has_digits(cjk_path):
        return cjk_path
    for p in LATIN_CANDIDATES:
        if Path(p).is_file():
            return p
    raise RuntimeError(f"{cjk_path} has no digits and no Latin font was found (install fonts-dejavu-core)")


def _segments(text: str) -> list[tuple[str, bool]]:
    """Split text into runs of (chars, is_ascii)."""
    out: list[tuple[str, bool]] = []
    for ch in text:
        a = ord(ch) < 128
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0] + ch, a)
        else:
            out.append((ch, a))
    return out


class _MixedFont:
    """A CJK font plus a Latin font for ASCII, at one size."""

    def __init__(self, cjk_path: str, size: int) -> None:
        self.cjk = ImageFont.truetype(cjk_path, size)
        self.latin = ImageFont.truetype(latin_font_for(cjk_path), size)

    def bbox(self, draw: ImageDraw.ImageDraw, text: str) -> tuple[float, float, float, float]:
        x = 0.0
        top, bottom = float("inf"), float("-inf")
        for seg, asc in _segments(text):
            f = self.latin if asc else self.cjk
            _, y1, _, y2 = draw.textbbox((0, 0), seg, font=f)
            top, bottom = min(top, y1), max(bottom, y2)
            x += draw.textlength(seg, font=f)
        return 0.0, top, x, bottom

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str,
             fill: tuple[int, ...]) -> None:
        x, y = xy
        for seg, asc in _segments(text):
            f = self.latin if asc else self.cjk
            draw.text((x, y), seg, font=f, fill=fill)
            x += draw.textlength(seg, font=f)


def random_phone(rng: np.random.Generator) -> tuple[str, str]:
    """(canonical number, how it is printed) - mostly mobiles, some landlines and 400 numbers."""
    kind = rng.choice(["mobile"] * 7 + ["landline", "service"])
    if kind == "mobile":
        d = "1" + str(rng.choice(list("3456789"))) + "".join(str(v) for v in rng.integers(0, 10, 9))
        style = int(rng.integers(0, 3))
        shown = d if style == 0 else f"{d[:3]}-{d[3:7]}-{d[7:]}" if style == 1 else f"{d[:3]} {d[3:7]} {d[7:]}"
        return d, shown
    if kind == "landline":
        area = str(rng.choice(["010", "021", "0755", "0571", "028"]))
        n = 8 if len(area) == 3 else int(rng.choice([7, 8]))
        sub = str(rng.integers(2, 10)) + "".join(str(v) for v in rng.integers(0, 10, n - 1))
        return f"{area}-{sub}", f"{area}-{sub}"
    d = str(rng.choice(["400", "800"])) + "".join(str(v) for v in rng.integers(0, 10, 7))
    return f"{d[:3]}-{d[3:6]}-{d[6:]}", f"{d[:3]}-{d[3:6]}-{d[6:]}"


def _qr_block(rng: np.random.Generator, size: int) -> Image.Image:
    cells = 21
    grid = rng.random((cells, cells)) < 0.5
    for oy, ox in ((0, 0), (0, cells - 7), (cells - 7, 0)):
        grid[oy:oy + 7, ox:ox + 7] = False
        grid[oy, ox:ox + 7] = grid[oy + 6, ox:ox + 7] = True
        grid[oy:oy + 7, ox] = grid[oy:oy + 7, ox + 6] = True
        grid[oy + 2:oy + 5, ox + 2:ox + 5] = True
    cells_img: np.ndarray = np.where(grid, 0, 255).astype(np.uint8)
    img: np.ndarray = cv2.resize(cells_img, (size, size), interpolation=cv2.INTER_NEAREST)
    return Image.fromarray(np.pad(img, 4, constant_values=255)).convert("RGB")


def _fit_font(draw: ImageDraw.ImageDraw, text: str, font_path: str, max_w: int, max_h: int) -> _MixedFont:
    size = max_h
    while size > 8:
        font = _MixedFont(font_path, size)
        x1, y1, x2, y2 = font.bbox(draw, text)
        if x2 - x1 <= max_w and y2 - y1 <= max_h:
            return font
        size -= 2
    return _MixedFont(font_path, 8)


def make_flyer(rng: np.random.Generator, *, font_path: str | None = None, width: int = 300,
               category: str | None = None, phone: tuple[str, str] | None = None,
               qr: bool | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one flyer.

    Args:
        rng: random generator (all choices come from it).
        font_path: CJK font; default :func:`find_cjk_font`.
        width: flyer width in pixels (height follows a portrait or landscape paper ratio).
        category: ad category (a key of :data:`HEADLINES`); random when None.
        phone: (canonical, printed) phone; random when None.
        qr: draw a QR-like block; random when None.

    Returns:
        (flyer, truth): flyer is BGRA uint8 (H, W, 4) with an opaque alpha (slightly ragged corners);
        truth has ``phone``, ``phone_text``, ``category``, ``keywords``, ``lines``, ``paper_bgr``.
    """
    font = font_path or find_cjk_font()
    if font is None:
        raise RuntimeError("no CJK font found (install fonts-droid-fallback or fonts-noto-cjk)")
    cat = category or str(rng.choice(sorted(HEADLINES)))
    options = HEADLINES[cat]
    headline, keywords = options[int(rng.integers(0, len(options)))]
    number, shown = phone or random_phone(rng)
    with_qr = bool(rng.random() < 0.3) if qr is None else qr
    portrait = bool(rng.random() < 0.6)
    height = int(width * (1.35 if portrait else 0.72))
    paper = PAPERS[int(rng.integers(0, len(PAPERS)))]
    ink = (255, 255, 255) if paper == PAPERS[-1] else tuple(int(v) for v in rng.choice(
        [(0, 0, 0), (20, 20, 170), (140, 30, 20)]))
    img = Image.new("RGB", (width, height), paper[::-1])
    draw = ImageDraw.Draw(img)
    m = max(4, width // 20)
    sub = str(rng.choice(SUBLINES))
    label = str(rng.choice(["电话:", "电话", "热线:", ""]))
    phone_line = f"{label}{shown}"
    rows = [(headline, 0.30), (sub, 0.14), (phone_line, 0.2)] if portrait else \
        [(headline, 0.34), (phone_line, 0.26), (sub, 0.16)]
    qr_size = int(min(width, height) * 0.32) if with_qr else 0
    y = m
    avail_h = height - 2 * m - (qr_size + m if with_qr and portrait else 0)
    for text, share in rows:
        f = _fit_font(draw, text, font, width - 2 * m, int(avail_h * share))
        x1, y1, x2, y2 = f.bbox(draw, text)
        f.draw(draw, ((width - (x2 - x1)) / 2 - x1, y - y1), text, ink[::-1])
        y2 = int(y2)
        y1 = int(y1)
        y += (y2 - y1) + int(avail_h * 0.08)
    if with_qr:
        q = _qr_block(rng, qr_size)
        img.paste(q, ((width - q.width) // 2, height - q.height - m // 2) if portrait
                  else (width - q.width - m // 2, height - q.height - m // 2))
    bgr = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)
    alpha = np.full((height, width), 255, np.uint8)
    for cx, cy in ((0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)):
        cv2.circle(alpha, (cx, cy), int(rng.integers(1, max(2, width // 40))), 0, -1)
    truth = {"phone": number, "phone_text": shown, "category": cat, "keywords": list(keywords),
             "lines": [r[0] for r in rows], "paper_bgr": list(paper), "qr": with_qr}
    return np.dstack([bgr, alpha]), truth


def make_sign(lines: Sequence[str], *, width: int = 240, paper_bgr: tuple[int, int, int] = (150, 60, 20),
              ink_bgr: tuple[int, int, int] = (255, 255, 255), font_path: str | None = None) -> np.ndarray:
    """A permanent sign (house-number plate, notice board) as BGRA: ``lines`` centred on plain paper."""
    font = font_path or find_cjk_font()
    if font is None:
        raise RuntimeError("no CJK font found (install fonts-droid-fallback or fonts-noto-cjk)")
    height = int(width * 0.28 * len(lines) + width * 0.08)
    img = Image.new("RGB", (width, height), paper_bgr[::-1])
    draw = ImageDraw.Draw(img)
    m = max(3, width // 25)
    row_h = (height - 2 * m) / len(lines)
    for i, text in enumerate(lines):
        f = _fit_font(draw, text, font, width - 2 * m, int(row_h * 0.8))
        x1, y1, x2, y2 = f.bbox(draw, text)
        f.draw(draw, ((width - (x2 - x1)) / 2 - x1, m + i * row_h + (row_h - (y2 - y1)) / 2 - y1), text,
               ink_bgr[::-1])
    bgr = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)
    return np.dstack([bgr, np.full((height, width), 255, np.uint8)])


def random_quad(rng: np.random.Generator, region: Sequence[int], aspect: float, width: float,
                jitter: float = 0.06) -> np.ndarray:
    """A slightly perspective-warped quad (4x2 float32, clockwise from top-left) inside ``region``.

    Args:
        rng: random generator.
        region: (x1, y1, x2, y2) pixels where the flyer may go.
        aspect: flyer width / height.
        width: flyer width in pixels on the image.
        jitter: corner displacement as a fraction of the size.
    """
    x1, y1, x2, y2 = (float(v) for v in region)
    w = min(width, (x2 - x1) * 0.9)
    h = min(w / aspect, (y2 - y1) * 0.9)
    w = h * aspect
    ox = rng.uniform(x1, x2 - w)
    oy = rng.uniform(y1, y2 - h)
    quad = np.array([[ox, oy], [ox + w, oy], [ox + w, oy + h], [ox, oy + h]], np.float32)
    quad += rng.uniform(-jitter, jitter, (4, 2)).astype(np.float32) * np.array([w, h], np.float32)
    return quad


def composite(wall_bgr: np.ndarray, flyer: np.ndarray, quad: np.ndarray | Sequence[Sequence[float]], *,
              shading: bool = True, blur_sigma: float = 0.7, noise_std: float = 2.0,
              seed: int = 0) -> np.ndarray:
    """Paste ``flyer`` (BGRA) onto a copy of ``wall_bgr`` at ``quad`` (4 corners, clockwise from top-left).

    Args:
        wall_bgr: BGR uint8 wall image.
        flyer: BGRA uint8 flyer (alpha 0..255).
        quad: target corners in wall pixels.
        shading: multiply the flyer by the wall's own local brightness (relative to its bright level), so
            shadows and light falloff of the scene lie on the paper too.
        blur_sigma: Gaussian blur of the pasted flyer (camera optics / low resolution).
        noise_std: Gaussian sensor noise added on the flyer (grey levels).
        seed: seed of the noise.

    Returns:
        The composite, BGR uint8, same size as ``wall_bgr``.
    """
    h, w = wall_bgr.shape[:2]
    fh, fw = flyer.shape[:2]
    src = np.array([[0, 0], [fw - 1, 0], [fw - 1, fh - 1], [0, fh - 1]], np.float32)
    dst = np.asarray(quad, np.float32).reshape(4, 2)
    m = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(flyer, m, (w, h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=(0, 0, 0, 0))
    color: np.ndarray = warped[:, :, :3].astype(np.float32)
    alpha: np.ndarray = warped[:, :, 3].astype(np.float32) / 255.0
    if blur_sigma > 0:
        color = cv2.GaussianBlur(color, (0, 0), blur_sigma)
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.5, blur_sigma * 0.7))
    wall = wall_bgr.astype(np.float32)
    if shading:
        grey = cv2.GaussianBlur(cv2.cvtColor(wall_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 9)
        x1, y1 = np.floor(dst.min(0)).astype(int)
        x2, y2 = np.ceil(dst.max(0)).astype(int)
        patch = grey[max(0, y1):max(1, y2), max(0, x1):max(1, x2)]
        ref = float(np.percentile(patch, 95)) if patch.size else 255.0
        light = np.clip(grey / max(ref, 1.0), 0.3, 1.1) * min(1.0, ref / 235.0)
        color *= light[:, :, None]
    if noise_std > 0:
        color += np.random.default_rng(seed).normal(0, noise_std, color.shape).astype(np.float32)
    out = wall * (1 - alpha[:, :, None]) + color * alpha[:, :, None]
    result: np.ndarray = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return result


def adjust_lighting(image_bgr: np.ndarray, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """Global lighting change (camera exposure, daylight): ``gain * image + offset``."""
    out: np.ndarray = np.clip(image_bgr.astype(np.float32) * gain + offset + 0.5, 0, 255).astype(np.uint8)
    return out


def read_frame(path: str | Path, t: float) -> np.ndarray:
    """First decoded frame at or after ``t`` seconds of a video (PyAV), BGR uint8."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= t - 1e-6:
                return np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
    raise ValueError(f"{path} has no frame at {t} s")


CORRIDOR_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "clips" / "one-by-one-person-detection.mp4"
CORRIDOR_WALL = (120, 15, 380, 228)
"""The large white wall left of the table in the corridor clip (768x432 pixels)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--n", type=int, default=30, help="number of images")
    ap.add_argument("--background", type=Path, default=CORRIDOR_CLIP, help="video or image of the wall")
    ap.add_argument("--t", type=float, default=0.0, help="frame time when --background is a video")
    ap.add_argument("--region", default=",".join(map(str, CORRIDOR_WALL)), help="x1,y1,x2,y2 wall area")
    ap.add_argument("--width", default="90,150", help="min,max flyer width on the image (px)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.background.suffix.lower() in (".mp4", ".mkv", ".avi", ".mov"):
        wall = read_frame(args.background, args.t)
    else:
        img = cv2.imread(str(args.background))
        if img is None:
            raise SystemExit(f"cannot read {args.background}")
        wall = img
    region = [int(v) for v in args.region.split(",")]
    wmin, wmax = (float(v) for v in args.width.split(","))
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.n):
        flyer, truth = make_flyer(rng)
        quad = random_quad(rng, region, flyer.shape[1] / flyer.shape[0], rng.uniform(wmin, wmax))
        image = composite(wall, flyer, quad, seed=i)
        truth["quad"] = quad.round(1).tolist()
        truth["box"] = [*quad.min(0).round(1).tolist(), *quad.max(0).round(1).tolist()]
        cv2.imwrite(str(args.out / f"flyer_{i:03d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (args.out / f"flyer_{i:03d}.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1))
    print(f"wrote {args.n} images to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
