"""Pure numpy measurements that compare a node's pixels with the verifier's.

Images are float32 RGB in [0, 1] (as :func:`verifier.compare.load_image` returns them) or
uint8; functions say which they need. Nothing here decides pass/fail: see :mod:`verifier.judge`.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from verifier.compare import ImageDecodeError, load_image
from verifier.tiles import Tile

SSIM_BLUR_SIGMA = 1.5  # blur before SSIM: keeps structure (shifts, wrong frames), drops noise
HIGHPASS_SIGMA = 1.0  # residual = image - blur(image): mostly render noise
MIN_NOISE_SIGMA = 0.5 / 255  # below this the reference is noise-free and a ratio means nothing


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit view of an image: uint8 passes through, floats in [0, 1] are rounded."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def to_float(image: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]: uint8 is scaled, floats pass through."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32, copy=False)


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape, f"tile shapes differ: {a.shape} vs {b.shape}"


# -- exact mode ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExactScore:
    equal_fraction: float  # share of pixels whose every channel is equal on 8 bits
    max_abs_diff: int  # largest |Δ| over all pixels and channels, 8-bit levels


def exact_match(node: np.ndarray, reference: np.ndarray, *, bitwise: bool = False
                ) -> ExactScore:
    """Pixel equality on 8 bits: same build + device + seed renders are bit-identical.

    ``bitwise``: float frames (EXR's linear data) compared bit for bit, each pixel equal only
    when every channel has the same float32 bits (NaN included); |Δ| in 8-bit levels of the
    linear values (unclipped, so a tampered highlight counts).
    """
    _same_shape(node, reference)
    if bitwise:
        a32 = np.ascontiguousarray(node, dtype=np.float32)
        b32 = np.ascontiguousarray(reference, dtype=np.float32)
        same = a32.view(np.uint32) == b32.view(np.uint32)
        per_pixel_same = same.all(axis=2) if same.ndim == 3 else same
        with np.errstate(invalid="ignore", over="ignore"):
            delta = np.nan_to_num(np.abs(a32.astype(np.float64) - b32), nan=1.0, posinf=1.0)
        levels = int(np.ceil(float(delta.max(initial=0.0)) * 255.0))
        if not per_pixel_same.all():
            levels = max(levels, 1)  # differing bits never read as "no difference"
        return ExactScore(float(per_pixel_same.mean()), min(levels, 1 << 30))
    a = to_uint8(node).astype(np.int16)
    b = to_uint8(reference).astype(np.int16)
    diff = np.abs(a - b)
    per_pixel = diff.max(axis=2) if diff.ndim == 3 else diff
    return ExactScore(float((per_pixel == 0).mean()), int(diff.max(initial=0)))


# -- statistical mode -----------------------------------------------------------------------


def blurred_ssim(node: np.ndarray, reference: np.ndarray, sigma: float = SSIM_BLUR_SIGMA) -> float:
    """SSIM after a Gaussian blur: structure only, so an honest other-seed render scores high."""
    _same_shape(node, reference)
    a = cv2.GaussianBlur(to_float(node), (0, 0), sigma)
    b = cv2.GaussianBlur(to_float(reference), (0, 0), sigma)
    channel_axis = 2 if a.ndim == 3 else None
    from skimage.metrics import structural_similarity  # see noise_sigma

    return float(structural_similarity(a, b, data_range=1.0, channel_axis=channel_axis))


def noise_sigma(image: np.ndarray) -> float:
    """Wavelet (MAD) estimate of the Gaussian noise level, averaged over channels."""
    # Imported here, as structural_similarity above: they load scipy (~1.1 CPU s), which
    # only statistical mode needs; a verifier checking exact-mode frames never starts it.
    from skimage.restoration import estimate_sigma

    img = to_float(image)
    channel_axis = -1 if img.ndim == 3 else None
    with warnings.catch_warnings():
        # skimage takes the median of the non-zero detail coefficients: a perfectly flat
        # image has none, and gets NaN with a warning. It has no noise at all: 0.
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma = float(estimate_sigma(img, channel_axis=channel_axis, average_sigmas=True))
    return 0.0 if math.isnan(sigma) else sigma


def noise_ratio(node: np.ndarray, reference: np.ndarray) -> float:
    """``sigma(node) / sigma(reference)``: ≈ 1 honest, ≈ √k for 1/k of the samples, < 1 denoised.

    NaN when the reference has no measurable noise (a noise-free region tells nothing).
    """
    _same_shape(node, reference)
    ref = noise_sigma(reference)
    if ref < MIN_NOISE_SIGMA:
        return float("nan")
    return noise_sigma(node) / ref


def highpass(image: np.ndarray, sigma: float = HIGHPASS_SIGMA) -> np.ndarray:
    """Image minus its blur: the fine-grained part, which in a path-traced frame is noise."""
    img = to_float(image)
    return img - cv2.GaussianBlur(img, (0, 0), sigma)


def noise_correlation(node: np.ndarray, reference: np.ndarray) -> float:
    """Pearson correlation of the high-pass residuals.

    With the same seed the noise is the same: honest ≈ 1.0, while a render with fewer samples
    or a denoised one with synthetic noise keeps only part of it. With a different seed it is
    near 0 even for honest renders, so it is meaningful only for same-seed references.
    """
    _same_shape(node, reference)
    a = highpass(node).ravel().astype(np.float64)
    b = highpass(reference).ravel().astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


LOWFREQ_SIGMA = 1.5  # blur of the difference image: keeps blotches, averages pixel noise away


def _luminance(image: np.ndarray) -> np.ndarray:
    img = to_float(image).astype(np.float64)
    return img[..., :3].mean(axis=2) if img.ndim == 3 else img


@dataclass(frozen=True)
class PairEnergy:
    """Squared differences between renders of one tile, per value, averaged over pairs.

    ``node``: the node's pixels N against each of the verifier's other-seed renders B, C, ...;
    ``honest``: every pair among the verifier's own renders (A, the job's seed, and B, C, ...).
    With independent honest renders both have the same expectation, ``2 σ²`` per value, so
    ``2 node / honest - 1`` estimates the node's error variance in units of an honest
    render's (:func:`variance_ratio`). The node is never compared with A: on another device
    the node's noise may share part of A's (same seed), never B's. More references average
    out how close one particular pair happens to be (denoised frames: few, large blotches).
    """

    node: float
    honest: float
    count: int


def pair_energy(
    node: np.ndarray,
    reference: np.ndarray,
    others: np.ndarray | list[np.ndarray] | tuple[np.ndarray, ...],
    *,
    lowfreq: bool,
) -> PairEnergy:
    """:class:`PairEnergy` of every RGB value (``lowfreq=False``: per-pixel noise, sample
    cuts, fine detail) or of the luminance difference blurred by :data:`LOWFREQ_SIGMA`
    (``lowfreq=True``: a denoiser's blotches, which survive any noise a cheater adds back).
    ``others``: the verifier's renders with other seeds than the job's (one or more)."""
    others = [others] if isinstance(others, np.ndarray) else list(others)
    assert others, "at least one other-seed render"
    for image in (node, *others):
        _same_shape(image, reference)

    def prepare(image: np.ndarray) -> np.ndarray:
        if lowfreq:
            return _luminance(image)
        return to_float(image).astype(np.float64)[..., :3]

    def energy(a: np.ndarray, b: np.ndarray) -> float:
        diff = a - b
        if lowfreq:
            diff = cv2.GaussianBlur(diff, (0, 0), LOWFREQ_SIGMA)
        return float(np.square(diff).sum())

    n = prepare(node)
    refs = [prepare(reference), *(prepare(o) for o in others)]
    node_e = [energy(n, r) for r in refs[1:]]
    honest_e = [energy(refs[i], refs[j]) for i in range(len(refs)) for j in range(i + 1, len(refs))]
    return PairEnergy(sum(node_e) / len(node_e), sum(honest_e) / len(honest_e), int(n.size))


MIN_PAIR_VARIANCE = (0.25 / 255) ** 2  # honest pair closer than this per value: noise-free


def variance_ratio(node: float, honest: float, count: int) -> float:
    """``2 node / honest - 1``: the node's error variance over an honest render's (1 honest,
    ≈ k for 1/k of the samples without adaptive sampling, < 1 denoised or smoothed). NaN when
    the honest pair barely differs (a noise-free region, or an engine without sampling noise)."""
    if count <= 0 or honest / count < MIN_PAIR_VARIANCE:
        return float("nan")
    return 2.0 * node / honest - 1.0


def channel_coherence(image: np.ndarray) -> float:
    """Mean correlation of the high-pass residual between colour channels.

    Path-tracing noise comes from whole light paths, so it is shared by R, G and B; noise a
    cheater adds per channel is not. Compared node vs reference by the judge.
    """
    res = highpass(image)
    if res.ndim != 3 or res.shape[2] < 3:
        return float("nan")
    flat = res[..., :3].reshape(-1, 3).T.astype(np.float64)
    if np.any(flat.std(axis=1) == 0):
        return float("nan")
    corr = np.corrcoef(flat)
    return float((corr[0, 1] + corr[0, 2] + corr[1, 2]) / 3)


# -- cheap per-frame checks ----------------------------------------------------------------


@dataclass(frozen=True)
class FrameCheck:
    ok: bool
    reason: str


def decode_frame(path: Path) -> np.ndarray | None:
    """The frame as float32 RGB (EXR: its display view), or None when it does not decode."""
    try:
        return load_image(path)
    except ImageDecodeError:
        return None


def check_frame(image: np.ndarray | None, width: int, height: int) -> FrameCheck:
    """Decodes, has the job's size, and is not blank (constant or nearly so)."""
    if image is None:
        return FrameCheck(False, "the file does not decode as an image")
    if image.shape[:2] != (height, width):
        got = f"{image.shape[1]}x{image.shape[0]}"
        return FrameCheck(False, f"size {got} differs from the job's {width}x{height}")
    img = to_float(image)
    # Per channel: a flat (0.8, 0.4, 0.1) frame has a large spread *across* channels.
    spread = img.reshape(-1, img.shape[-1]).std(axis=0).max() if img.ndim == 3 else img.std()
    if float(spread) < 1.0 / 255:
        return FrameCheck(False, "the frame is blank (one flat colour)")
    return FrameCheck(True, "decodes, right size, not blank")


EMPTY_LEVELS = 2  # 8-bit levels of dither Blender adds to empty pixels (measured: 1 at 1.0)


def empty_outside(image: np.ndarray, area: Tile) -> bool:
    """Nothing but black (and its dither) outside ``area``: Blender leaves a Render Region's
    surroundings empty when it does not crop the file to it. ``image`` as load_image gives
    it (float, [0, 1])."""
    height, width = image.shape[:2]
    if (area.x, area.y, area.w, area.h) == (0, 0, width, height):
        return True
    outside = np.ones((height, width), dtype=bool)
    outside[area.y: area.y + area.h, area.x: area.x + area.w] = False
    values = image[outside]
    return not values.size or float(values.max()) <= (EMPTY_LEVELS + 0.5) / 255


def pixel_hash(image: np.ndarray) -> str:
    """SHA-256 of the decoded 8-bit pixels and shape (PNG bytes differ between equal renders)."""
    px = np.ascontiguousarray(to_uint8(image))
    h = hashlib.sha256(repr(px.shape).encode())
    h.update(px.tobytes())
    return h.hexdigest()


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit difference hash (dHash): survives re-encoding, noise and small edits."""
    img = to_float(image)
    gray = img[..., :3].mean(axis=2) if img.ndim == 3 else img
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two perceptual hashes."""
    return (a ^ b).bit_count()


def alignment_gain(node: np.ndarray, reference: np.ndarray, reach: int = 1) -> float:
    """How much better the node's tile matches the reference moved by up to ``reach`` pixels.

    Honest: ≈ 0 (no offset beats the true one); a shifted frame gains at the offset it was
    moved by. Blurred SSIM alone barely notices a 1-px shift; this does.
    """
    _same_shape(node, reference)
    h, w = node.shape[:2]
    inner = (slice(reach, h - reach), slice(reach, w - reach))
    base = blurred_ssim(node[inner], reference[inner])
    best = base
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if dx or dy:
                moved = reference[reach + dy : h - reach + dy, reach + dx : w - reach + dx]
                best = max(best, blurred_ssim(node[inner], moved))
    return best - base
