"""wsimito's tiling against MONAI's sliding_window_inference: the same segmentation net on the same image.

    pip install monai      # for this script only; it is not a wsimito dependency
    python benchmarks/monai_compare.py [--image FIELD.jpg] [--widths 32 64 128 256 | --model SEG.pt] [--json]

Runs the phase-1 wavelet U-Net (seeded random weights of the default widths, or a trained ``--model``; eval
mode, no autograd) over one RGB image (default: a real 2084x2084 MITOS 2012 field) with the same [-1, 1] float
input, tile side, overlap and batch on every path:

- wsimito: ``segment_array``: tiles of ``tiling.tile_size`` overlapping by ``tiling.halo`` on each side, in
  batches of 8 as ``detect`` runs them, channels-last; only each tile's core is kept (no blending), white
  padding beyond the image.
- MONAI: ``sliding_window_inference`` with roi = tile side, overlap = 2 * halo / tile, mode "constant" (windows
  averaged where they overlap; the last window shifted to end at the image edge), the softmax inside the
  predictor, so probabilities are averaged. MONAI hands the predictor contiguous (NCHW) windows, whatever the
  input's memory format, so a third path converts them to channels-last inside the predictor.

Prints wall and CPU seconds (best and median of ``--repeats`` interleaved runs after one warm-up batch), the
tiles or windows the net saw, and how far each mitosis probability map is from wsimito's. Random weights give
an almost flat map, so read the differences against its spread; a trained ``--model`` makes them meaningful.
They come from two places: the image border (wsimito pads with white, MONAI's windows stay inside the image and
the convs zero-pad, i.e. mid-grey) and MONAI's averaging of window edges, where a window sees less context;
"inner" leaves out the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from PIL import Image

from wsimito.config import SegmentationNetConfig, TilingConfig
from wsimito.nets.inputs import to_tensor
from wsimito.segmentation import SegmentationModel, segment_array

FIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "mitos2012-icpr" / "images" / "A03_00.jpg"
DETECT_BATCH = 8  # pipeline.detect_slide's batch of tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=FIELD, help="an RGB image, taken as at the model mpp")
    parser.add_argument("--widths", type=int, nargs="+", default=list(SegmentationNetConfig.widths))
    parser.add_argument("--model", type=Path, help="a trained segmentation model file instead of random weights")
    parser.add_argument("--tile", type=int, default=TilingConfig.tile_size)
    parser.add_argument("--halo", type=int, default=TilingConfig.halo)
    parser.add_argument("--batch", type=int, default=DETECT_BATCH)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        model = SegmentationModel.load(args.model)
    else:
        model = SegmentationModel.new({"arch": SegmentationNetConfig.arch, "widths": args.widths,
                                       "convs_per_block": SegmentationNetConfig.convs_per_block}, TilingConfig.mpp)
    net = model.net.eval()
    rgb = np.array(Image.open(args.image).convert("RGB"))
    with torch.no_grad():  # warm-up, shared: the allocator and the conv kernels for a full batch of tiles
        net(to_tensor(np.zeros((args.batch, args.tile, args.tile, 3), np.uint8), "cpu"))
    seen = [0]
    net.register_forward_pre_hook(lambda module, inputs: seen.__setitem__(0, seen[0] + len(inputs[0])))

    @torch.no_grad()
    def monai(memory_format) -> np.ndarray:
        probs = sliding_window_inference(
            to_tensor(rgb[None], "cpu"), (args.tile, args.tile), args.batch,
            lambda x: torch.softmax(net(x.contiguous(memory_format=memory_format)).float(), dim=1)[:, 1:],
            overlap=2 * args.halo / args.tile, mode="constant")
        return probs[0, 0].numpy()

    paths = {
        "wsimito segment_array": lambda: segment_array(model, rgb, args.tile, args.halo, args.batch),
        "monai sliding_window_inference": lambda: monai(torch.contiguous_format),
        "monai, windows made channels-last": lambda: monai(torch.channels_last),
    }
    wall, cpu = {name: [] for name in paths}, {name: [] for name in paths}
    tiles, probs = {}, {}
    for _ in range(args.repeats):  # interleaved, so that other jobs' load falls on every path alike
        for name, run in paths.items():
            seen[0], start, start_cpu = 0, time.perf_counter(), time.process_time()
            probs[name] = run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            tiles[name] = seen[0]
    reference = probs["wsimito segment_array"]
    rows = []
    for name in paths:
        diff = np.abs(probs[name] - reference)
        inner = diff[args.tile : -args.tile, args.tile : -args.tile]
        rows.append({"path": name, "tiles": tiles[name], "best_s": round(min(wall[name]), 2),
                     "median_s": round(statistics.median(wall[name]), 2),
                     "median_cpu_s": round(statistics.median(cpu[name]), 2),
                     "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                     "max_abs_diff_inner": float(inner.max())})
    result = {"image": str(args.image), "size": list(rgb.shape[:2]), "net": model.spec, "tile": args.tile,
              "halo": args.halo, "batch": args.batch, "threads": args.threads, "repeats": args.repeats,
              "torch": torch.__version__, "p_min": float(reference.min()), "p_max": float(reference.max()),
              "p_std": float(reference.std()), "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.image.name} {rgb.shape[0]}x{rgb.shape[1]}; net {model.spec} from {args.model or 'seed 0'}")
    print(f"tile {args.tile} halo {args.halo} batch {args.batch}, {args.threads} threads, {args.repeats} repeats, "
          f"torch {torch.__version__}")
    print(f"mitosis probability (wsimito): min {result['p_min']:.4f}, max {result['p_max']:.4f}, "
          f"std {result['p_std']:.2e}; dP = a path's map minus it; inner = more than {args.tile} px from the border")
    print("| path | tiles | best s | median s | median CPU s | max abs dP | mean abs dP | max abs dP inner |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['path']} | {row['tiles']} | {row['best_s']} | {row['median_s']} | {row['median_cpu_s']} | "
              f"{row['max_abs_diff']:.2e} | {row['mean_abs_diff']:.2e} | {row['max_abs_diff_inner']:.2e} |")


if __name__ == "__main__":
    main()
