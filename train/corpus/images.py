"""Instrument pictures (emoji, openclipart, procedural drawings) filmed as user-generated video.

A source image is an RGBA array; a clip's video is that picture composited on a generated
background with the camera's faults: drift and shake, scale, blur, lighting, occlusion, noise, and
stretches where the instrument is out of shot.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path

import cairosvg
import cv2
import numpy as np
from PIL import Image, ImageDraw

from streamrec.train.corpus.sources import INSTRUMENTS, OPENCLIPART, QABCS, emoji_dir, emoji_images, icon_set_file

FRAME_WIDTH, FRAME_HEIGHT = 320, 240  # pixels
VIDEO_FPS = 10  # frames per second written to the clips (the models sample 1 fps from it)
SOURCE_SIZE = 256  # pixels, longest side of a rasterised source image
N_PROCEDURAL_VARIANTS = 12  # distinct drawings per procedurally drawn class


@dataclass(frozen=True)
class SourceImage:
    id: str  # e.g. "emoji-google:1f3bb", "openclipart:violin_ganson", "procedural:organ:3"
    licence_key: str  # key of sources.LICENCES


def source_images(class_name: str) -> list[SourceImage]:
    """Every distinct picture available for a class, in a stable order."""
    spec = INSTRUMENTS[class_name]
    found = [SourceImage(f"emoji-{style}:{cp}", f"emoji-{style}") for cp in spec.emoji for style, _ in emoji_images(cp)]
    found += [
        SourceImage(f"openclipart:{path}", "openclipart") for path in spec.clipart if (OPENCLIPART / path).exists()
    ]
    found += [SourceImage(f"icon-{s}:{name}", f"icons-{s}") for s, name in spec.icons if icon_set_file(s).exists()]
    found += [SourceImage(f"qabcs:{stem}", "qabcs") for stem in spec.drawings if (QABCS / f"{stem}.png").exists()]
    if spec.procedural:
        found += [SourceImage(f"procedural:{spec.procedural}:{i}", "procedural") for i in range(N_PROCEDURAL_VARIANTS)]
    return found


@functools.lru_cache(maxsize=64)
def load_rgba(image_id: str) -> np.ndarray:
    """(height, width, 4) uint8 RGBA, cropped to its opaque content, longest side SOURCE_SIZE."""
    kind, _, rest = image_id.partition(":")
    if kind.startswith("emoji-"):
        image = Image.open(emoji_dir() / kind.removeprefix("emoji-") / f"{rest}.png").convert("RGBA")
    elif kind == "openclipart":
        png = cairosvg.svg2png(url=str(OPENCLIPART / rest), output_width=SOURCE_SIZE * 2)
        image = Image.open(io.BytesIO(png)).convert("RGBA")
    elif kind.startswith("icon-"):  # an icon of an Iconify set (training or field-dev artwork)
        png = cairosvg.svg2png(bytestring=iconify_svg(kind.removeprefix("icon-"), rest), output_width=SOURCE_SIZE * 2)
        image = Image.open(io.BytesIO(png)).convert("RGBA")
    elif kind == "qabcs":
        image = Image.open(QABCS / f"{rest}.png").convert("RGBA")
    elif kind == "procedural":
        name, _, variant = rest.partition(":")
        image = PROCEDURAL_DRAWINGS[name](np.random.default_rng(1000 + int(variant)))
    else:
        raise ValueError(f"unknown image source {image_id!r}")
    box = image.getchannel("A").getbbox()
    if box:
        image = image.crop(box)
    scale = SOURCE_SIZE / max(image.size)
    if scale != 1:
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.LANCZOS if scale < 1 else Image.BICUBIC,
        )
    return np.asarray(image)


@functools.cache
def _icon_set(path: Path) -> dict:
    """A fetched Iconify set, parsed once per process (field-dev's are whole sets of thousands of icons)."""
    return json.loads(path.read_text(encoding="utf-8"))


def iconify_svg(icon_set: str, name: str) -> bytes:
    """An icon of a fetched Iconify JSON set (sources.ICON_SETS, or field-dev's in train/corpus/field.py) as a
    standalone SVG document; glyphs drawn in `currentColor` get a dark ink, as printed or painted artwork would."""
    data = _icon_set(icon_set_file(icon_set))
    icon = data["icons"][name]
    width, height = icon.get("width", data.get("width", 16)), icon.get("height", data.get("height", 16))
    left, top = icon.get("left", data.get("left", 0)), icon.get("top", data.get("top", 0))
    body = icon["body"].replace("currentColor", "#222222")
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{left} {top} {width} {height}">{body}</svg>'
    return svg.encode("utf-8")


# --- procedural drawings for classes that have no emoji and no clip art ------------------------


def _colour(rng: np.random.Generator, base: tuple[int, int, int], spread: int = 30) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)  # type: ignore[return-value]


def draw_organ(rng: np.random.Generator) -> Image.Image:
    """A pipe organ: a row of metal pipes of varying heights over a wooden console with keys."""
    w, h = 320, 300
    image = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    wood = _colour(rng, (110, 70, 40))
    metal = _colour(rng, (190, 190, 175), 25)
    n = int(rng.integers(9, 17))
    pipe_w = (w - 40) / n
    shape = rng.choice(["arch", "v", "flat"])
    for i in range(n):
        x = 20 + i * pipe_w
        u = abs(i - (n - 1) / 2) / ((n - 1) / 2)
        height = {"arch": 190 - 90 * u, "v": 100 + 90 * u, "flat": 160}[shape] + rng.integers(-8, 9)
        top = 200 - height
        d.rectangle([x + 2, top, x + pipe_w - 2, 200], fill=metal, outline=(90, 90, 90))
        d.polygon([(x + 2, 170), (x + pipe_w / 2, 160), (x + pipe_w - 2, 170)], fill=(60, 60, 60))
    d.rectangle([5, 200, w - 5, h - 5], fill=wood, outline=(50, 30, 15), width=3)
    for row in range(int(rng.integers(1, 4))):
        y = 215 + row * 25
        d.rectangle([30, y, w - 30, y + 18], fill=(245, 240, 225), outline=(40, 40, 40))
        for k in range(30, w - 30, 9):
            d.line([k, y, k, y + 18], fill=(40, 40, 40))
            if (k // 9) % 7 not in (2, 6):
                d.rectangle([k + 5, y, k + 9, y + 10], fill=(20, 20, 20))
    return image


def draw_harmonica(rng: np.random.Generator) -> Image.Image:
    """A harmonica: metal cover plates over a comb with a row of square holes."""
    w, h = 320, 110
    image = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    metal = _colour(rng, (200, 200, 205), 25)
    comb = _colour(rng, tuple(rng.choice([(30, 30, 30), (200, 40, 40), (40, 60, 160), (150, 110, 60)])), 20)
    d.rounded_rectangle([5, 5, w - 5, h - 5], radius=14, fill=metal, outline=(80, 80, 80), width=3)
    d.rectangle([5, 40, w - 5, 75], fill=comb)
    holes = int(rng.choice([10, 10, 12, 16]))
    step = (w - 30) / holes
    for i in range(holes):
        x = 15 + i * step
        d.rectangle([x + 3, 47, x + step - 3, 68], fill=(10, 10, 10))
    for y in (20, 90):
        d.line([15, y, w - 15, y], fill=(150, 150, 155), width=2)
    return image


def draw_clarinet(rng: np.random.Generator) -> Image.Image:
    """A clarinet, upright: black tube, flared bell, mouthpiece, silver keys and rings."""
    w, h = 90, 330
    image = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    body = _colour(rng, (25, 25, 28), 12)
    silver = _colour(rng, (205, 205, 210), 20)
    cx = w // 2
    d.polygon([(cx - 6, 5), (cx + 6, 5), (cx + 9, 40), (cx - 9, 40)], fill=(15, 15, 15))
    d.rectangle([cx - 11, 40, cx + 11, 270], fill=body)
    d.polygon([(cx - 11, 270), (cx + 11, 270), (cx + 32, h - 5), (cx - 32, h - 5)], fill=body)
    for y in (40, 120, 200, 268):
        d.rectangle([cx - 13, y - 3, cx + 13, y + 3], fill=silver)
    for y in range(60, 260, int(rng.integers(16, 24))):
        side = 1 if rng.random() < 0.5 else -1
        d.ellipse([cx - 4 + side * 6, y - 4, cx + 4 + side * 6, y + 4], fill=silver)
        d.line([cx, y, cx + side * 16, y + 6], fill=silver, width=2)
    return image


PROCEDURAL_DRAWINGS = {"organ": draw_organ, "harmonica": draw_harmonica, "clarinet": draw_clarinet}


# --- backgrounds and filming ------------------------------------------------------------------


def background(rng: np.random.Generator) -> np.ndarray:
    """A (FRAME_HEIGHT * 1.25, FRAME_WIDTH * 1.25, 3) float32 scene, larger than the frame so the camera can pan."""
    h, w = int(FRAME_HEIGHT * 1.25), int(FRAME_WIDTH * 1.25)
    style = rng.choice(["room", "gradient", "stage", "bokeh"])
    top, bottom = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    ramp = np.linspace(0, 1, h)[:, None, None]
    scene = (top * (1 - ramp) + bottom * ramp) * np.ones((h, w, 3))
    if style == "room":
        floor = int(h * rng.uniform(0.6, 0.8))
        scene[floor:] = rng.uniform(30, 160, 3)
        for _ in range(int(rng.integers(1, 4))):  # furniture, posters, doors
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, floor - 20))
            scene[y0 : y0 + int(rng.integers(20, 120)), x0 : x0 + int(rng.integers(20, 120))] = rng.uniform(0, 255, 3)
    elif style == "stage":
        scene *= 0.25
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(int(rng.integers(1, 4))):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(60, 160)
            spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2))
            scene += spot[..., None] * rng.uniform(60, 200, 3)
    elif style == "bokeh":
        for _ in range(int(rng.integers(10, 30))):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(scene, centre, int(rng.integers(8, 40)), rng.uniform(0, 255, 3).tolist(), -1)
        scene = cv2.GaussianBlur(scene, (0, 0), 6)
    scene += rng.normal(0, rng.uniform(2, 10), (h, w, 1))  # texture
    return np.clip(scene, 0, 255).astype(np.float32)


@dataclass(frozen=True)
class Filming:
    """How one clip is filmed; every field is drawn once per clip from its seed."""

    scale: float  # instrument height as a share of the frame height
    rotation: float  # degrees
    start: tuple[float, float]  # instrument centre at t=0, as a share of frame width/height
    drift: tuple[float, float]  # share of frame per second
    shake: float  # pixels of hand-held jitter
    blur: float  # Gaussian sigma, pixels
    brightness: float  # gain on pixel values
    contrast: float
    tint: tuple[float, float, float]
    noise: float  # sensor noise sigma, grey levels
    occluder: tuple[float, float, float, float] | None  # centre x, y, radius (share of frame), speed px/s
    out_of_shot: tuple[float, float] | None  # seconds [from, to) where the camera looks away
    flip: bool


def plan_filming(rng: np.random.Generator, seconds: float) -> Filming:
    out = None
    if rng.random() < 0.3 and seconds >= 4:
        start = float(rng.uniform(1, seconds - 2.5))
        out = (start, start + float(rng.uniform(1.5, min(4.0, seconds - start))))
    return Filming(
        scale=float(rng.uniform(0.35, 0.95)),
        rotation=float(rng.normal(0, 12)),
        start=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.35, 0.65))),
        drift=(float(rng.normal(0, 0.02)), float(rng.normal(0, 0.01))),
        shake=float(rng.choice([0.0, 1.0, 3.0])),
        blur=float(rng.choice([0.0, 0.0, 0.8, 1.5, 2.5])),
        brightness=float(rng.uniform(0.55, 1.3)),
        contrast=float(rng.uniform(0.7, 1.2)),
        tint=tuple(float(x) for x in rng.uniform(0.85, 1.15, 3)),  # type: ignore[arg-type]
        noise=float(rng.uniform(1, 9)),
        occluder=(
            float(rng.uniform(0.2, 0.8)),
            float(rng.uniform(0.2, 0.8)),
            float(rng.uniform(0.08, 0.2)),
            float(rng.uniform(-20, 20)),
        )
        if rng.random() < 0.4
        else None,
        out_of_shot=out,
        flip=bool(rng.random() < 0.5),
    )


def _prepare_instrument(rgba: np.ndarray, filming: Filming) -> np.ndarray:
    """Scaled and rotated RGBA (float32) as it appears in every frame of the clip."""
    image = rgba[:, ::-1] if filming.flip else rgba
    target_h = filming.scale * FRAME_HEIGHT
    scale = target_h / max(image.shape[0], image.shape[1] * 0.75)
    size = (max(4, round(image.shape[1] * scale)), max(4, round(image.shape[0] * scale)))
    resized = cv2.resize(
        np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    )
    h, w = resized.shape[:2]
    diagonal = int(np.ceil(np.hypot(h, w)))
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), filming.rotation, 1.0)
    matrix[:, 2] += ((diagonal - w) / 2, (diagonal - h) / 2)
    rotated = cv2.warpAffine(resized, matrix, (diagonal, diagonal), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    return rotated.astype(np.float32)


def _paste(canvas: np.ndarray, sprite: np.ndarray, cx: float, cy: float) -> None:
    """Alpha-composites sprite (RGBA float) centred at (cx, cy) onto canvas (RGB float), in place."""
    h, w = sprite.shape[:2]
    x0, y0 = round(cx - w / 2), round(cy - h / 2)
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(canvas.shape[1], x0 + w), min(canvas.shape[0], y0 + h)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    part = sprite[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    alpha = part[..., 3:4] / 255.0
    region = canvas[cy0:cy1, cx0:cx1]
    region *= 1 - alpha
    region += alpha * part[..., :3]


def film(rgba: np.ndarray, filming: Filming, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """(n_frames, FRAME_HEIGHT, FRAME_WIDTH, 3) uint8 RGB at VIDEO_FPS."""
    scene = background(rng)
    sprite = _prepare_instrument(rgba, filming)
    n_frames = round(seconds * VIDEO_FPS)
    frames = np.empty((n_frames, FRAME_HEIGHT, FRAME_WIDTH, 3), np.uint8)
    pan_x, pan_y = (scene.shape[1] - FRAME_WIDTH) / 2, (scene.shape[0] - FRAME_HEIGHT) / 2
    occluder_colour = rng.uniform(40, 230, 3)
    tint = np.array(filming.tint, np.float32)
    for i in range(n_frames):
        t = i / VIDEO_FPS
        jitter = rng.normal(0, filming.shake, 2) if filming.shake else np.zeros(2)
        ox, oy = int(pan_x + jitter[0]), int(pan_y + jitter[1])
        ox, oy = int(np.clip(ox, 0, scene.shape[1] - FRAME_WIDTH)), int(np.clip(oy, 0, scene.shape[0] - FRAME_HEIGHT))
        canvas = scene[oy : oy + FRAME_HEIGHT, ox : ox + FRAME_WIDTH].copy()
        cx = (filming.start[0] + filming.drift[0] * t) * FRAME_WIDTH + 4 * np.sin(1.3 * t)
        cy = (filming.start[1] + filming.drift[1] * t) * FRAME_HEIGHT + 3 * np.sin(0.9 * t)
        if filming.out_of_shot and filming.out_of_shot[0] <= t < filming.out_of_shot[1]:
            cx += FRAME_WIDTH * 1.5  # the camera looks away: the instrument is out of the frame
        _paste(canvas, sprite, cx, cy)
        if filming.occluder:
            x, y, r, speed = filming.occluder
            centre = (int(x * FRAME_WIDTH + speed * t), int(y * FRAME_HEIGHT))
            cv2.ellipse(
                canvas,
                centre,
                (int(r * FRAME_WIDTH), int(r * FRAME_WIDTH * 1.6)),
                0,
                0,
                360,
                occluder_colour.tolist(),
                -1,
            )
        if filming.blur:
            canvas = cv2.GaussianBlur(canvas, (0, 0), filming.blur)
        canvas = (canvas - 128) * filming.contrast + 128
        canvas *= filming.brightness * tint
        canvas += rng.normal(0, filming.noise, canvas.shape[:2])[..., None]
        frames[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return frames
