"""Draw one picture per workflow into docs/: pose targets of a batch, a CenterNet class map, a crowd
density map and Gaussian splats. Every input is synthetic and seeded, so a rerun gives the same files.

Usage::

    .venv/bin/python docs/make_pictures.py [--out-dir docs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import gaussheat_gpu as gh  # noqa: E402
from gaussheat_gpu import targets  # noqa: E402
from gaussheat_gpu.plot import imshow, pixel_edges  # noqa: E402

# A stick figure in a 192x256 (W x H) crop: COCO's 17 keypoints, head to ankles.
SKELETON = np.array([[96, 40], [102, 34], [90, 34], [110, 38], [82, 38], [122, 70], [70, 70], [134, 108],
                     [58, 108], [140, 142], [52, 142], [114, 146], [78, 146], [118, 196], [74, 196],
                     [122, 244], [70, 244]], dtype=np.float64)
PICTURES = ("pose_targets.png", "centernet_classes.png", "crowd_density.png", "splats.png")


def pose_batch(rng):
    """Four images, one to three people each (shifted, scaled, jittered), some keypoints hidden."""
    people, image = [], []
    for b, count in enumerate((1, 2, 3, 2)):
        for _ in range(count):
            scale = rng.uniform(0.35, 0.6)
            offset = rng.uniform([0, 0], [192 - 192 * scale, 256 - 256 * scale])
            people.append(SKELETON * scale + offset + rng.normal(0, 1.5, SKELETON.shape))
            image.append(b)
    keypoints = np.array(people)
    visible = (rng.random(keypoints.shape[:2]) < 0.9).astype(np.float32)
    return keypoints, visible, np.array(image)


def draw_pose(plt, path, rng):
    keypoints, visible, image = pose_batch(rng)
    heat, _ = targets.keypoint_heatmaps(keypoints, (48, 64), 2.0, visible=visible, image=image, n_images=4,
                                        input_size=(192, 256))
    fig, axes = plt.subplots(1, 4, figsize=(8, 3.2))
    for b, ax in enumerate(axes):
        imshow(heat[b].max(axis=0), ax=ax, cmap="magma", vmin=0, vmax=1)
        count = int((image == b).sum())
        ax.set_title(f"image {b}: {count} {'person' if count == 1 else 'people'}", fontsize=9)
        ax.axis("off")
    fig.suptitle("keypoint_heatmaps: 4 images x 17 keypoints (max over channels), 48x64, MSRA sigma 2",
                 fontsize=9)
    _save(fig, path)


def draw_centernet(plt, path, rng):
    n = 14
    x1, y1 = rng.uniform(0, 420, n), rng.uniform(0, 420, n)
    size = rng.uniform(30, 200, (n, 2))
    boxes = np.column_stack([x1, y1, np.minimum(x1 + size[:, 0], 511), np.minimum(y1 + size[:, 1], 511)])
    labels = rng.integers(0, 3, n)
    heat = targets.center_heatmaps(boxes, labels, 3, (128, 128), input_size=(512, 512))
    rgb = np.moveaxis(heat, 0, -1)  # class c in colour channel c
    fig, ax = plt.subplots(figsize=(4.2, 4.4))
    ax.imshow(rgb, extent=pixel_edges(heat.shape), interpolation="nearest")
    for (bx1, by1, bx2, by2), c in zip(boxes / 4, labels):
        ax.add_patch(plt.Rectangle((bx1, by1), bx2 - bx1, by2 - by1, fill=False, lw=0.6, color="rgb"[c]))
    ax.set_title("center_heatmaps: 3 classes (one colour each), 128x128;\n"
                 f"{int((heat == 1).sum())} centres exactly 1.0", fontsize=9)
    ax.axis("off")
    _save(fig, path)


def draw_crowd(plt, path, rng):
    # Clustered heads: a dense group, a loose one and scattered people, on 480x320.
    groups = [rng.normal([120, 120], 25, (220, 2)), rng.normal([340, 200], 50, (120, 2)),
              rng.uniform([0, 0], [480, 320], (60, 2))]
    points = np.clip(np.concatenate(groups), 0, [479, 319])
    density = targets.density_map(points, (320, 480), sigma="adaptive")
    fig, ax = plt.subplots(figsize=(6, 4.2))
    from matplotlib.colors import PowerNorm

    shown = imshow(density, ax=ax, cmap="inferno", norm=PowerNorm(gamma=0.45, vmin=0))
    fig.colorbar(shown, ax=ax, fraction=0.035, label="heads per pixel")
    ax.set_title(f"density_map(sigma='adaptive'): {len(points)} heads, sum = {density.sum():.2f}", fontsize=9)
    ax.axis("off")
    _save(fig, path)


def draw_splats(plt, path, rng):
    n = 20_000
    # Splats along a spiral, elongated along it.
    t = rng.uniform(0, 6 * np.pi, n)
    r = 12 + 9 * t
    x, y = 256 + r * np.cos(t) + rng.normal(0, 6, n), 256 + r * np.sin(t) + rng.normal(0, 6, n)
    kernels = gh.Kernels(x, y, sigma_x=rng.uniform(1.5, 5, n), sigma_y=rng.uniform(0.4, 1.2, n),
                         theta=t + np.pi / 2, amplitude=rng.uniform(0.5, 1.0, n))
    heat = gh.render(kernels, (512, 512), truncate=3)
    fig, ax = plt.subplots(figsize=(4.6, 4.8))
    imshow(heat, ax=ax, cmap="twilight_shifted")
    ax.set_title(f"render: {n:,} rotated splats, 512x512, sum of pdfs", fontsize=9)
    ax.axis("off")
    _save(fig, path)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    fig.clf()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, draw, seed in zip(PICTURES, (draw_pose, draw_centernet, draw_crowd, draw_splats), range(4)):
        draw(plt, out / name, np.random.default_rng(seed))
        print(f"wrote {out / name}")
    plt.close("all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
