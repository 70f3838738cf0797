"""An image grid of the demo: one row per operating point (heaviest first) or step schedule, one column per
held-out prompt.

python scripts/make_image_grid.py [SOURCE] [--prompts 6] [--ops r1_d6,r2_d4,r4_d3] [--schedule SPEC ...]
                                  [--steps N] [--cfg S] [--seed 0] [-o docs/images/grid.png]

With --schedule (repeatable: r4_d3:0.25,r1_d6:0.75, or a schedule the bundle's manifest names) the schedules are
rows after the --ops points (none without --ops), labelled with their phases and GFLOPs per image.

SOURCE is a checkpoint or a bundle folder (default: the demo checkpoint in the package). Every row uses the
same prompts and the same noise seeds (prompt i: seed + i), so a column shows what cost buys for one prompt.
Each image is framed green when the demo scorer passes it under the strict rule (nothing but the named objects),
amber when it passes only GenEval's rule (the named objects, but something else too), red when it fails both.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from elasticdit.demo.scorer import score
from elasticdit.demo.shapes import heldout_prompts
from elasticdit.evaluation import PROMPT_SEED
from elasticdit.generation import open_source

FRAME, GAP, LABEL_W, HEADER_H = 3, 6, 118, 44
PASS, GENEVAL_ONLY, FAIL = (40, 200, 90), (240, 170, 30), (230, 60, 60)
INK, PAPER = (235, 235, 235), (24, 24, 24)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", default=None, help="checkpoint or bundle (default: the demo)")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--ops", default=None, help="comma-separated operating points (default: all)")
    parser.add_argument("--schedule", action="append", default=[], help="a step schedule row; repeatable")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--cfg", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/grid.png"))
    args = parser.parse_args(argv)

    src = open_source(args.source)
    points = [src.point(n.strip()) for n in args.ops.split(",")] if args.ops else []
    points = points if args.ops or args.schedule else src.points
    scenes = heldout_prompts(args.prompts, PROMPT_SEED)
    prompts = [s.prompt for s in scenes]
    seeds = [args.seed + i for i in range(len(prompts))]
    steps, guidance = src.settings(args.steps, args.cfg)
    rows = [(p.name, f"{p.name}\n{p.gflops:.3f} GFLOPs", p.name) for p in points]
    for text in args.schedule:
        plan = src.schedule(text)
        phases = "\n".join(f"{p.point} {p.share:g}" for p in plan.phases)
        per_image = src.gflops_per_image(plan, steps, guidance)
        rows.append((plan.label, f"{phases}\n{per_image:.3g} GFLOPs/img", plan))
    h, w = src.resolution
    cell_w, cell_h = w + 2 * FRAME + GAP, h + 2 * FRAME + GAP
    grid = Image.new("RGB", (LABEL_W + cell_w * len(prompts), HEADER_H + cell_h * len(rows)), PAPER)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for j, prompt in enumerate(prompts):
        lines = textwrap.wrap(prompt, width=max(8, w // 6))[:3]
        draw.multiline_text((LABEL_W + j * cell_w, 4), "\n".join(lines), fill=INK, font=font, spacing=2)
    for i, (name, label, what) in enumerate(rows):
        y = HEADER_H + i * cell_h
        draw.multiline_text((6, y + h // 2 - 6 * label.count("\n") - 6), label, fill=INK, font=font)
        images = src.generate_many(prompts, seeds, what, steps, guidance)
        for j, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
            x = LABEL_W + j * cell_w
            result = score(image, prompt)
            colour = PASS if result.strict else GENEVAL_ONLY if result.passed else FAIL
            draw.rectangle((x, y, x + w + 2 * FRAME - 1, y + h + 2 * FRAME - 1), fill=colour)
            grid.paste(Image.fromarray(image), (x + FRAME, y + FRAME))
        print(f"{name}: done", file=sys.stderr, flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.output, optimize=True)
    size = f"{len(points)} operating points, {len(rows) - len(points)} schedules x {len(prompts)} prompts"
    print(f"wrote {args.output} ({size}, {steps} steps, cfg {guidance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
