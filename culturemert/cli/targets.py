"""``culturemert targets TEACHER MANIFEST --out DIR``: label a corpus once for pre-training."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from culturemert.cli.options import add_set_option, overrides


@dataclass
class TargetsOptions:
    """How ``targets`` fits a k-means teacher (``codebooks`` …) or runs EnCodec (``bandwidth``)."""

    codebooks: list[str] = field(default_factory=list)
    teacher_out: str | None = None
    fit_tracks: int | None = None
    max_frames: int = 100_000
    seed: int = 0
    bandwidth: float = 6.0
    device: str = "cpu"


def add_parser(subparsers) -> None:
    """Register the ``targets`` subcommand."""
    parser = subparsers.add_parser(
        "targets",
        help="precompute a teacher's discrete targets for every track of a manifest",
        description="Label every manifest track once with a teacher and write OUT/<track>.<hash>.npy "
        "(int16 [codebooks, frames] at 75 Hz) plus OUT/index.json with the teacher's hash. "
        "Re-running resumes. TEACHER is a k-means teacher file, encodec:DIR (a local Hugging "
        "Face-layout EnCodec 24 kHz checkpoint), or fit-kmeans to fit a k-means teacher on the "
        "manifest first (saved as --teacher-out).",
        epilog="examples:\n"
        "  culturemert targets fit-kmeans corpus.jsonl --out targets/ "
        "--codebook mfcc:500 --codebook chroma:24\n"
        "  culturemert targets targets/teacher.safetensors more.jsonl --out targets-more/\n"
        "  culturemert targets encodec:~/models/encodec_24khz corpus.jsonl --out codes/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("teacher", help="k-means teacher file, encodec:DIR, or fit-kmeans")
    parser.add_argument("manifest", help=".jsonl/.csv/.tsv manifest with a path column")
    parser.add_argument("--out", required=True, type=Path, help="target directory")
    fit = parser.add_argument_group("fit-kmeans")
    fit.add_argument(
        "--codebook",
        action="append",
        metavar="FEATURES:K",
        help="a codebook to fit, e.g. mfcc:500, chroma:24 or logmel+chroma:500 (repeatable)",
    )
    fit.add_argument(
        "--teacher-out", type=Path, help="where to save it (default OUT/teacher.safetensors)"
    )
    fit.add_argument("--fit-tracks", type=int, help="fit on this many random tracks")
    fit.add_argument("--max-frames", type=int, help="frames to cluster, 75 per s (default 100000)")
    fit.add_argument("--seed", type=int, help="k-means seed (default 0)")
    encodec = parser.add_argument_group("encodec")
    encodec.add_argument("--bandwidth", type=float, help="kbps (default 6 = 8 codebooks)")
    encodec.add_argument("--device", help="device to run EnCodec on (default cpu)")
    add_set_option(parser, "max_frames=50000")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load or fit the teacher, label the manifest, print a summary."""
    from culturemert.config import config_from_dict
    from culturemert.manifest import ManifestError, read_manifest
    from culturemert.teachers import TeacherFileError, load_teacher
    from culturemert.teachers.targets import TargetsError, compute_targets, fit_kmeans_on_tracks

    flags = {
        "codebooks": args.codebook,
        "teacher_out": None if args.teacher_out is None else str(args.teacher_out),
        "fit_tracks": args.fit_tracks,
        "max_frames": args.max_frames,
        "seed": args.seed,
        "bandwidth": args.bandwidth,
        "device": args.device,
    }
    try:
        options = config_from_dict(
            TargetsOptions, {}, overrides(flags, args.overrides), where="targets settings"
        )
        tracks = read_manifest(args.manifest)
        root = Path(args.manifest).resolve().parent
        if args.teacher == "fit-kmeans":
            if not options.codebooks:
                print("fit-kmeans needs at least one --codebook FEATURES:K", file=sys.stderr)
                return 2
            teacher = fit_kmeans_on_tracks(
                tracks,
                root,
                options.codebooks,
                fit_tracks=options.fit_tracks,
                max_frames=options.max_frames,
                seed=options.seed,
            )
            saved = teacher.save(options.teacher_out or args.out / "teacher.safetensors")
            print(f"saved teacher {teacher.name} to {saved}")
        elif args.teacher.startswith("encodec:"):
            teacher = load_teacher(args.teacher, bandwidth=options.bandwidth, device=options.device)
        else:
            teacher = load_teacher(args.teacher)
        summary = compute_targets(teacher, tracks, root, args.out)
    except (ManifestError, TeacherFileError, TargetsError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = [
        ("teacher", teacher.name),
        ("hash", teacher.hash),
        ("codebooks", " ".join(str(k) for k in teacher.codebook_sizes)),
        ("computed", summary.computed),
        ("skipped (done before)", summary.skipped),
        ("failed (unreadable audio)", len(summary.failed)),
        ("frames", f"{summary.frames} ({summary.frames / 75 / 3600:.2f} h)"),
        ("output", args.out),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for track_id, reason in list(summary.failed.items())[:10]:
        print(f"  failed: {track_id}: {reason}", file=sys.stderr)
    return 0
