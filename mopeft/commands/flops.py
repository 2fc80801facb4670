"""``mopeft flops``: fvcore's multiply-add count (GMAC) of a method's image encoder and decoder, no
operator dropped: the counter behind Table 4.5 (``mopeft bench`` counts FLOP, see mopeft.measure.flops)."""

from __future__ import annotations

import argparse
import json

from mopeft.commands.options import add_set_argument, parse_sets

HELP = "count multiply-adds in GMAC (1 multiply-add (MAC) = 2 FLOP; fvcore) of one image's forward pass"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mopeft.model.arch import ARCHS

    parser.add_argument("--arch", default="vit_b", choices=list(ARCHS), help="architecture")
    parser.add_argument("--method", default="baseline", help="method name (see `mopeft methods`)")
    add_set_argument(parser)
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: the arch's)")
    parser.add_argument("--num-classes", type=int, default=2, help="decoder classes K (default 2)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    parser.add_argument("--out", help="also write the JSON here (atomically)")


def run(args: argparse.Namespace) -> int:
    from mopeft.measure.flops import model_flops

    result = model_flops(args.arch, args.method, parse_sets(args.sets), args.image_size, args.num_classes)
    if args.out:
        from mopeft.io import write_json

        write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(
            f"{result['arch']} / {result['method']} @ {result['image_size']}², 1 image, unit {result['unit']}"
        )
        for part in ("image_encoder", "mask_decoder", "prompt_encoder", "total"):
            print(f"  {part:<15} {result[part + '_gmac']:>12.4f} GMAC")
    return 0
