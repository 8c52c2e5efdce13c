"""The continual pre-training loop on Lightning Fabric: stages, checkpoints, exact resume, export.

Everything that can stop a run (recipe, manifests, mixtures, targets, teacher hash, batch
arithmetic) is checked before the first update. Each stage freezes all but its trainable
parameters, builds a fresh AdamW, follows its learning-rate schedule, checkpoints every
``checkpoint_every`` updates and at its end, and exports the encoder in Hugging Face layout.

Every random draw of an update (its crops, noise, mask, dropout) is a function of the seed, the
stage, the update and the rank, so a checkpoint needs only the stage and update to resume
exactly on any number of ranks, and the mask does not depend on how a batch is split.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lightning.fabric import Fabric
from lightning.fabric.strategies import DDPStrategy, FSDPStrategy
from tqdm.auto import tqdm
from transformers import HubertConfig, HubertModel

from culturemert.atomic import write_text
from culturemert.frames import SAMPLE_RATE
from culturemert.model import EncoderCard, save_encoder
from culturemert.model.checkpoint import Preprocessing
from culturemert.model.fairseq import is_fairseq_checkpoint
from culturemert.pretrain.card import stage_card
from culturemert.pretrain.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from culturemert.pretrain.data import (
    CropDataset,
    DataError,
    Source,
    check_targets,
    crop_loader,
    mixture_sources,
    read_corpus,
)
from culturemert.pretrain.freeze import set_trainable
from culturemert.pretrain.metrics_log import STEP_COLUMN, MetricsLog
from culturemert.pretrain.objective import PretrainingObjective
from culturemert.pretrain.recipe import (
    PRECISIONS,
    EngineConfig,
    OptimizerConfig,
    Recipe,
    StageConfig,
    recipe_to_dict,
)
from culturemert.pretrain.schedule import learning_rate
from culturemert.pretrain.warm_start import load_heads, open_start
from culturemert.teachers.targets import TargetSet, load_targets

log = logging.getLogger(__name__)

CHECKPOINT_FILE = Path("checkpoints") / "last.ckpt"


class RunError(RuntimeError):
    """A run that cannot start or continue; the message says what to do."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class StagePlan:
    """A stage with its data sources and per-device micro-batch size, checked before training."""

    index: int
    config: StageConfig
    sources: list[Source]
    micro_batch: int

    @property
    def where(self) -> str:
        """The stage's position in the recipe, for messages."""
        return f"stages.{self.index}"


def make_fabric(engine: EngineConfig) -> Fabric:
    """A Fabric for the recipe's engine (DDP tolerates layerdrop's unused layers)."""
    strategy: Any = engine.strategy
    on_cpu = engine.accelerator == "cpu" or (
        engine.accelerator == "auto" and not torch.cuda.is_available()
    )
    if engine.strategy == "fsdp" and on_cpu:  # Lightning's FSDPStrategy refuses CPU devices
        raise RunError(
            "engine.strategy: fsdp shards the model over GPUs and Lightning does not run it on "
            "CPU; use engine.strategy=ddp (gloo) for several CPU processes"
        )
    if engine.strategy == "ddp":
        strategy = DDPStrategy(find_unused_parameters=True)
    elif engine.strategy == "fsdp":  # full state dicts keep checkpoints one portable file
        strategy = FSDPStrategy(state_dict_type="full", use_orig_params=True)
    return Fabric(
        accelerator=engine.accelerator,
        devices=engine.devices,
        num_nodes=engine.num_nodes,
        strategy=strategy,
        precision=PRECISIONS[engine.precision],
    )


def make_optimizer(
    parameters: list[torch.nn.Parameter], config: OptimizerConfig, lr: float
) -> torch.optim.AdamW:
    """AdamW with a stage's settings (MERT's by default)."""
    return torch.optim.AdamW(
        parameters,
        lr=lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )


def plan_stages(recipe: Recipe, world_size: int) -> tuple[list[StagePlan], TargetSet]:
    """Read manifests and targets and check every stage's data; raise before any training."""
    targets = load_targets(recipe.teacher.targets, recipe.teacher.hash)
    if targets.codebook_sizes != list(recipe.objective.codebook_sizes):
        raise DataError(
            f"objective.codebook_sizes: {recipe.objective.codebook_sizes} does not match the "
            f"teacher's {targets.codebook_sizes} ({recipe.teacher.targets})"
        )
    corpus = read_corpus(recipe.data.manifests)
    replay = read_corpus([recipe.data.replay_manifest]) if recipe.data.replay_manifest else []
    # Tracks the teacher could not read are as unreadable now: leave them out of every mixture.
    corpus = [t for t in corpus if t.track_id not in targets.failed]
    replay = [t for t in replay if t.track_id not in targets.failed]
    plans, used = [], {}
    for index, stage in enumerate(recipe.stages):
        where = f"stages.{index}"
        sources = mixture_sources(
            stage.mixture, corpus, replay, stage.crop_seconds, where=f"{where}.mixture"
        )
        micro_batch, remainder = divmod(stage.crops_per_step, world_size * stage.accumulate)
        if micro_batch < 1 or remainder:
            raise DataError(
                f"{where}.batch_seconds: {stage.crops_per_step} crops per update do not split "
                f"evenly over {world_size} device(s) × accumulate {stage.accumulate}"
            )
        plans.append(StagePlan(index, stage, sources, micro_batch))
        used.update({t.track_id: t for s in sources for t in s.tracks})
    check_targets(targets, list(used.values()), where=f"teacher.targets ({recipe.teacher.targets})")
    return plans, targets


def build_objective(recipe: Recipe) -> tuple[PretrainingObjective, Preprocessing]:
    """The objective around the starting encoder: a Hugging Face folder (with the heads stored
    beside it, if any), a fairseq checkpoint with its heads, or one of our checkpoints."""
    init = Path(recipe.init)
    if init.is_file() and not is_fairseq_checkpoint(init):
        saved = read_checkpoint(init)
        encoder = HubertModel(HubertConfig.from_dict(saved["encoder_config"]))
        objective = PretrainingObjective(encoder, recipe.objective)
        try:
            objective.load_state_dict(saved["model"])
        except RuntimeError as error:
            raise RunError(
                f"init: {init} does not fit this recipe's objective (codebook_sizes, "
                f"use_cqt, cqt_bins must match the run that wrote it): {error}"
            ) from None
        preprocessing = Preprocessing(**saved["preprocessing"])
    else:
        encoder, heads = open_start(init)
        preprocessing = encoder.preprocessing
        objective = PretrainingObjective(encoder.module, recipe.objective)
        if heads is not None:  # heads trained with the encoder (MERT's), not random ones
            load_heads(objective, heads, where=f"init: {init}")
    if preprocessing.sample_rate != SAMPLE_RATE:
        raise RunError(
            f"init: {init} expects {preprocessing.sample_rate} Hz audio; MERT's objective and "
            f"teachers work at {SAMPLE_RATE} Hz"
        )
    return objective.train(), preprocessing


def train(
    recipe: Recipe, out_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> list[Path]:
    """Run the recipe's stages (or continue an interrupted run); return the exported encoders."""
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_FILE
    if resume and not checkpoint_path.is_file():
        raise RunError(f"--resume: no checkpoint at {checkpoint_path}")
    if not resume and checkpoint_path.exists():
        raise RunError(
            f"{out_dir}: already holds a run ({CHECKPOINT_FILE}); pass --resume to continue it "
            "or choose another --out"
        )
    fabric = make_fabric(recipe.engine)
    fabric.launch()
    plans, targets = plan_stages(recipe, fabric.world_size)
    fabric.seed_everything(recipe.seed, verbose=False)  # the same new heads on every rank
    objective, preprocessing = build_objective(recipe)
    position = (0, 0)
    if resume:
        saved = read_checkpoint(checkpoint_path)
        position = (int(saved["stage"]), int(saved["step"]))
        if saved["recipe"] != recipe_to_dict(recipe):
            log.warning(
                "%s: the recipe differs from the checkpoint's; resuming with the new one "
                "(losses will not repeat the interrupted run exactly)",
                checkpoint_path,
            )
        del saved
    offsets = np.cumsum([0] + [p.config.steps for p in plans]).tolist()
    metrics = None
    if fabric.global_rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(out_dir / "recipe.yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
        metrics = MetricsLog(
            out_dir,
            resume_after=offsets[position[0]] + position[1] if resume else None,
            loggers=recipe.engine.loggers,
            hparams=recipe_to_dict(recipe),
        )
    context = _RunContext(
        fabric, recipe, objective, preprocessing, targets, checkpoint_path, metrics, progress, plans
    )
    exported = []
    for plan in plans[position[0] :]:
        restore = resume and plan.index == position[0]
        start = position[1] if restore else 0
        model = _train_stage(context, plan, offsets[plan.index], start, restore)
        directory, card = context.stage_directory(plan), context.stage_card(plan)
        exported.append(_export(context, model, directory, card))
    if metrics is not None:
        metrics.close()
    return exported


@dataclass
class _RunContext:
    fabric: Fabric
    recipe: Recipe
    objective: PretrainingObjective
    preprocessing: Preprocessing
    targets: TargetSet
    checkpoint_path: Path
    metrics: MetricsLog | None
    progress: bool
    plans: list[StagePlan]

    def stage_card(self, plan: StagePlan, updates: int | None = None) -> EncoderCard:
        """The card of the encoder after stage ``plan`` (or ``updates`` of its updates)."""
        sources = [p.sources for p in self.plans[: plan.index + 1]]
        return stage_card(self.recipe, sources, updates=updates)

    def stage_directory(self, plan: StagePlan, updates: int | None = None) -> Path:
        """Where the encoder after stage ``plan`` (or ``updates`` of its updates) goes."""
        name = f"{plan.index}-{plan.config.name}"
        if updates is None:
            return self.checkpoint_path.parents[1] / "stages" / name
        return self.checkpoint_path.parents[1] / "snapshots" / f"{name}-{updates}"


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (run seed, stage, rank, step, …)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def _train_stage(
    context: _RunContext, plan: StagePlan, offset: int, start: int, restore: bool
) -> torch.nn.Module:
    """Updates ``start … steps − 1`` of one stage; returns the Fabric-wrapped model."""
    fabric, recipe, stage = context.fabric, context.recipe, plan.config
    parameters = set_trainable(context.objective, stage.trainable, f"{plan.where}.trainable")
    optimizer = make_optimizer(
        parameters, stage.optimizer, learning_rate(stage.schedule, start, stage.steps)
    )
    model, optimizer = fabric.setup(context.objective, optimizer)
    unreadable: set[str] = set()
    if restore:
        extra = load_checkpoint(
            fabric, context.checkpoint_path, {"model": model, "optimizer": optimizer}
        )
        unreadable = set(extra["data"]["unreadable"])
    crop_samples = round(stage.crop_seconds * SAMPLE_RATE)
    dataset = CropDataset(plan.sources, context.targets, crop_samples, recipe.seed, plan.index)
    loader = crop_loader(
        dataset,
        plan.micro_batch,
        start * stage.accumulate,
        stage.steps * stage.accumulate,
        rank=fabric.global_rank,
        world_size=fabric.world_size,
        num_workers=recipe.data.num_workers,
    )
    batches = iter(fabric.setup_dataloaders(loader, use_distributed_sampler=False))
    audio_per_step = stage.crops_per_step * stage.crop_seconds
    bar = tqdm(
        total=stage.steps,
        initial=start,
        desc=f"stage {plan.index} {stage.name}",
        unit="step",
        disable=not context.progress or fabric.global_rank != 0,
    )
    clock, audio_since_log = time.perf_counter(), 0.0
    for step in range(start, stage.steps):
        lr = learning_rate(stage.schedule, step, stage.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # Dropout and layerdrop draw from the global RNG: seeding it per rank and update makes
        # a resumed run repeat them on every rank with no RNG state in the checkpoint.
        torch.manual_seed(_seed(recipe.seed, plan.index, fabric.global_rank, step))
        stats, names = _accumulate(context, model, batches, plan, step, unreadable)
        stats = fabric.all_reduce(stats, reduce_op="mean")
        if not torch.isfinite(stats).all():
            values = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, stats.tolist(), strict=True))
            raise NonFiniteLossError(
                f"stage {stage.name!r} update {step}: non-finite loss ({values}); stopped "
                f"without updating; the last good checkpoint is {context.checkpoint_path}"
            )
        grad_norm = None
        if stage.optimizer.grad_clip > 0:
            grad_norm = fabric.clip_gradients(model, optimizer, max_norm=stage.optimizer.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        audio_since_log += audio_per_step
        bar.update(1)
        log_now = done % recipe.log_every == 0 or done == stage.steps
        checkpoint_now = done % recipe.checkpoint_every == 0 or done == stage.steps
        if log_now or checkpoint_now:
            _merge_unreadable(fabric, unreadable)
        if log_now:
            elapsed = time.perf_counter() - clock
            row = {
                STEP_COLUMN: offset + done,
                "stage": stage.name,
                "step": done,
                "lr": lr,
                **{n: float(v) for n, v in zip(names, stats.tolist(), strict=True)},
                "grad_norm": float(grad_norm) if grad_norm is not None else "",
                "audio_hours_per_hour": audio_since_log / elapsed,
                "unreadable_files": len(unreadable),
            }
            bar.set_postfix(
                loss=f"{row['loss']:.3f}",
                lr=f"{lr:.2e}",
                audio_h_per_h=f"{row['audio_hours_per_hour']:.1f}",
            )
            if context.metrics is not None:
                context.metrics.write(row)
            clock, audio_since_log = time.perf_counter(), 0.0
        if done in stage.snapshots:
            directory, card = context.stage_directory(plan, done), context.stage_card(plan, done)
            _export(context, model, directory, card)
        if checkpoint_now:
            save_checkpoint(
                fabric,
                context.checkpoint_path,
                _checkpoint_state(context, model, optimizer, plan.index, done, unreadable),
            )
    bar.close()
    return model


def _accumulate(
    context: _RunContext,
    model: torch.nn.Module,
    batches: Any,
    plan: StagePlan,
    step: int,
    unreadable: set[str],
) -> tuple[torch.Tensor, list[str]]:
    """Forward and backward over one update's micro-batches; mean loss, terms and accuracies."""
    fabric, stage, seed = context.fabric, plan.config, context.recipe.seed
    total: torch.Tensor | None = None
    names: list[str] = []
    for micro in range(stage.accumulate):
        batch = next(batches)
        unreadable.update(batch["unreadable"])
        noise = torch.Generator().manual_seed(
            _seed(seed, plan.index, fabric.global_rank, step, micro)
        )
        mask = _rank_mask(context, batch["waveforms"].shape, _seed(seed, plan.index, step, micro))
        with fabric.no_backward_sync(model, enabled=micro < stage.accumulate - 1):
            output = model(batch["waveforms"], batch["codes"], generator=noise, mask=mask)
            fabric.backward(output.loss / stage.accumulate)
        names = ["loss", *(f"loss_{k}" for k in output.terms), "masked_frames"]
        names += [f"accuracy_{k}" for k in range(len(output.accuracy))]
        values = torch.stack(
            [
                output.loss.detach().float(),
                *(v.float() for v in output.terms.values()),
                torch.tensor(float(output.masked_frames), device=output.loss.device),
                *output.accuracy.float(),
            ]
        )
        total = values if total is None else total + values
    return total / stage.accumulate, names


def _rank_mask(context: _RunContext, shape: torch.Size, seed: int) -> torch.Tensor:
    """This rank's rows of a span mask drawn for the micro-batch of all ranks together.

    Every rank draws the same mask for the ``world_size × B`` clips of one micro-batch step, so
    masking does not depend on how the clips are split over devices, and each row masks the
    same number of frames: the mean of the ranks' losses is the loss of the whole batch.
    """
    fabric, objective = context.fabric, context.objective
    rows, samples = shape
    generator = torch.Generator().manual_seed(seed)
    mask = objective.draw_mask(rows * fabric.world_size, objective.frame_count(samples), generator)
    return mask[fabric.global_rank * rows : (fabric.global_rank + 1) * rows]


def _merge_unreadable(fabric: Fabric, unreadable: set[str]) -> None:
    """Add the files other ranks found unreadable, so logs and checkpoints count them all."""
    if fabric.world_size > 1:
        gathered: list[Any] = [None] * fabric.world_size
        torch.distributed.all_gather_object(gathered, sorted(unreadable))
        for paths in gathered:
            unreadable.update(paths)


def _checkpoint_state(
    context: _RunContext,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    stage_index: int,
    step: int,
    unreadable: set[str],
) -> dict[str, Any]:
    encoder = context.objective.encoder
    return {
        "model": model,
        "optimizer": optimizer,
        "stage": stage_index,
        "step": step,
        "data": {"unreadable": sorted(unreadable)},
        "encoder_config": encoder.config.to_dict(),
        "preprocessing": asdict(context.preprocessing),
        "recipe": recipe_to_dict(context.recipe),
    }


def _export(
    context: _RunContext, model: torch.nn.Module, directory: Path, card: EncoderCard
) -> Path:
    """Write the encoder in Hugging Face layout with its card (loads with load_encoder and
    transformers)."""
    fabric = context.fabric
    gather: Any = nullcontext()
    if isinstance(fabric.strategy, FSDPStrategy):  # gather the sharded weights on rank 0
        from torch.distributed.fsdp import FullyShardedDataParallel

        gather = FullyShardedDataParallel.summon_full_params(
            model, writeback=False, rank0_only=True
        )
    with gather:
        if fabric.global_rank == 0:
            encoder = context.objective.encoder
            save_encoder(encoder, directory, preprocessing=context.preprocessing, card=card)
    fabric.barrier()
    return directory
