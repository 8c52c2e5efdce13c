"""``culturemert targets TEACHER MANIFEST --out DIR``: label a corpus once for pre-training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    fit.add_argument("--fit-tracks", type=int, default=None, help="fit on this many random tracks")
    fit.add_argument("--max-frames", type=int, default=100_000, help="frames to cluster (75 per s)")
    fit.add_argument("--seed", type=int, default=0)
    encodec = parser.add_argument_group("encodec")
    encodec.add_argument("--bandwidth", type=float, default=6.0, help="kbps (6 = 8 codebooks)")
    encodec.add_argument("--device", default="cpu")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load or fit the teacher, label the manifest, print a summary."""
    from culturemert.manifest import ManifestError, read_manifest
    from culturemert.teachers import TeacherFileError, load_teacher
    from culturemert.teachers.targets import TargetsError, compute_targets, fit_kmeans_on_tracks

    try:
        tracks = read_manifest(args.manifest)
        root = Path(args.manifest).resolve().parent
        if args.teacher == "fit-kmeans":
            if not args.codebook:
                print("fit-kmeans needs at least one --codebook FEATURES:K", file=sys.stderr)
                return 2
            teacher = fit_kmeans_on_tracks(
                tracks,
                root,
                args.codebook,
                fit_tracks=args.fit_tracks,
                max_frames=args.max_frames,
                seed=args.seed,
            )
            saved = teacher.save(args.teacher_out or args.out / "teacher.safetensors")
            print(f"saved teacher {teacher.name} to {saved}")
        elif args.teacher.startswith("encodec:"):
            teacher = load_teacher(args.teacher, bandwidth=args.bandwidth, device=args.device)
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
