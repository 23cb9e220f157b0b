"""Forward speed and size of the phase-1 segmentation nets (wavelet vs plain U-Net), per tile.

Inference as ``detect`` runs it: eval mode, no autograd, batches of tiles. Prints one row per config and arch.

    python benchmarks/seg_net_speed.py                       # 512x512 tiles, batch 4, CPU, fp32
    python benchmarks/seg_net_speed.py --device cuda --bf16 --channels-last
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from wsimito.nets import build_segmentation_net

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(net, x, repeats: int, bf16: bool) -> tuple[float, float]:
    """Median wall and process-CPU seconds per forward pass, after one warm-up pass (allocator, kernels).

    On a shared machine the wall time grows with other people's load; the CPU time (summed over threads) much
    less, so compare nets by both.
    """
    wall, cpu = [], []
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(repeats + 1):
            _sync(x.device)
            start, start_cpu = time.perf_counter(), time.process_time()
            net(x)
            _sync(x.device)
            if i:
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["seg-paper", "seg-tiny"], help="names in configs/")
    parser.add_argument("--archs", nargs="+", default=["wavelet", "plain"])
    parser.add_argument("--size", type=int, default=512, help="tile side, pixels")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--bf16", action="store_true", help="torch.autocast to bfloat16")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, "
        f"batch {args.batch} x 3 x {args.size} x {args.size}, bf16={args.bf16}, channels_last={args.channels_last}"
    )
    print(f"{'config':<12}{'arch':<9}{'params':>11}{'s/batch':>10}{'s/tile':>9}{'tiles/s':>9}{'cpu-s/tile':>12}")
    for config in args.configs:
        with open(CONFIGS / f"{config}.yaml") as f:
            spec = yaml.safe_load(f)["segmentation"]
        for arch in args.archs:
            torch.manual_seed(0)
            net = build_segmentation_net({**spec, "arch": arch}).to(device, memory_format=memory_format).eval()
            x = torch.rand(args.batch, spec.get("in_channels", 3), args.size, args.size, device=device)
            seconds, cpu_seconds = time_forward(net, x.to(memory_format=memory_format), args.repeats, args.bf16)
            params = sum(p.numel() for p in net.parameters())
            print(
                f"{config:<12}{arch:<9}{params:>11,}{seconds:>10.3f}{seconds / args.batch:>9.3f}"
                f"{args.batch / seconds:>9.1f}{cpu_seconds / args.batch:>12.3f}"
            )


if __name__ == "__main__":
    main()
