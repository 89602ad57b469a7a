"""Knowledge distillation of a teacher package into a smaller student (Hinton et al. 2015, DistilBERT init)."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compression.augment import AugmentConfig, augment, crossover
from compression.config import HIDDEN_TARGETS, FinetuneConfig
from compression.data import ClincData, Split, load_clinc
from compression.finetune import EncodedSplit, load_classifier, training_args
from compression.packaging import save_torch_package
from compression.teacher_cache import cached_logits

logger = logging.getLogger(__name__)


@dataclass
class DistillConfig(FinetuneConfig):
    """Student + KD hyperparameters; `student` is "layers:0,2,4" (teacher subset) or an HF id / dir."""

    teacher_dir: Path = Path("artifacts/teacher")
    # More teachers whose logits are averaged with the teacher's into the soft targets (an ensemble teaches
    # better than any of its members); the student is still built from `teacher_dir` for "layers:...".
    extra_teachers: tuple[Path, ...] = ()
    student: str = "layers:0,2,4"
    # For a base-model student (a name, HF id or folder): keep only these of its layers ("0,2,4"; "" = all).
    student_layers: str = ""
    output_dir: Path = Path("artifacts/student")
    name: str = "student"
    alpha: float = 0.5
    temperature: float = 2.0
    # Weight of a mean-squared error between raw logits (Ba & Caruana 2014). KL at any temperature ignores a
    # shift of all logits, but the energy / max-logit oos scores read their level: this term transfers it.
    logit_mse: float = 0.0
    # Weight of a hidden-state term: each student layer is pulled towards the output of the teacher layer whose
    # work it replaces (`teacher_layer_map`). Logits teach the output only; this also teaches the intermediate
    # representations. "cls": distance of the L2-normalised [CLS] states (Patient KD, Sun et al. 2019);
    # "tokens": MSE over every token's state (TinyBERT, Jiao et al. 2020), far more signal per query.
    hidden_weight: float = 0.0
    hidden_target: str = "cls"
    epochs: float = 8.0
    learning_rate: float = 2e-4
    batch_size: int = 32
    # Noisy copies of the train queries added to the transfer set, labelled by the teacher (TinyBERT-style).
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Folder of teacher logits shared by runs with the same teachers and transfer set (compression.teacher_cache).
    logits_cache: Path | None = None
    extra_source: dict[str, Any] = field(default_factory=dict)


def distillation_loss(
    student_logits: Any, teacher_logits: Any, labels: Any, alpha: float, temperature: float, logit_mse: float = 0.0
) -> Any:
    """alpha * CE + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + logit_mse * MSE(logits)."""
    import torch.nn.functional as F  # noqa: N812

    ce = F.cross_entropy(student_logits, labels)
    if alpha >= 1.0:
        return ce
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
    )
    loss = alpha * ce + (1.0 - alpha) * temperature**2 * kl
    if logit_mse:
        loss = loss + logit_mse * F.mse_loss(student_logits, teacher_logits)
    return loss


def pkd_loss(student_cls: Any, teacher_cls: Any) -> Any:
    """Mean over examples and layers of the squared distance between L2-normalised [CLS] states (rows, layers, H)."""
    import torch.nn.functional as F  # noqa: N812

    diff = F.normalize(student_cls, dim=-1) - F.normalize(teacher_cls, dim=-1)
    return diff.pow(2).sum(-1).mean()


def token_mse_loss(student: Any, teacher: Any, mask: Any) -> Any:
    """MSE between hidden states (rows, tokens, layers, H) over the real tokens only (mask: rows, tokens)."""
    keep = mask.bool()
    return (student[keep] - teacher[keep]).pow(2).mean()


def subset_layers(student: str) -> list[int] | None:
    """The teacher layer indices of a "layers:i,j,k" student spec, or None for an HF id / dir."""
    if not student.startswith("layers:"):
        return None
    return [int(x) for x in student.removeprefix("layers:").split(",") if x.strip()]


def teacher_layer_map(student: str, teacher_layers: int, student_layers: int) -> list[int]:
    """For each student layer, the index in the teacher's `hidden_states` of the output it must reproduce."""
    kept = subset_layers(student)
    if kept is not None:
        # Student layer k starts as teacher layer l[k] and stands for teacher layers l[k] .. l[k+1]-1,
        # so its output should be the teacher's output after layer l[k+1]-1: hidden_states[l[k+1]].
        return [*kept[1:], teacher_layers]
    # Any other student: spread its layers evenly over the teacher's (PKD-skip).
    return [round((k + 1) * teacher_layers / student_layers) for k in range(student_layers)]


def student_from_teacher_layers(teacher: Any, layers: list[int]) -> Any:
    """A student with the teacher's embeddings, pooler, head and a subset of its encoder layers."""
    import copy

    n = teacher.config.num_hidden_layers
    if not layers or any(i < 0 or i >= n for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"layers {layers} must be distinct indices of the teacher's {n} layers")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    state = teacher.state_dict()
    mapped = {}
    for key, value in state.items():
        if ".encoder.layer." in key:
            prefix, rest = key.split(".encoder.layer.", 1)
            idx, tail = rest.split(".", 1)
            if int(idx) not in layers:
                continue
            key = f"{prefix}.encoder.layer.{layers.index(int(idx))}.{tail}"
        mapped[key] = value.clone()
    missing, unexpected = student.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"layer-subset init mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return student


def check_same_tokenizer(teacher_tok: Any, student_tok: Any, student_id: str) -> None:
    """Refuse a student whose vocabulary or casing differs: teacher logits would be about other tokens."""
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise ValueError(
            f"student {student_id!r} has a different tokenizer vocabulary than the teacher; "
            "distillation needs the same tokenizer (pick a student of the same family, or use layers:...)"
        )
    lower = [
        getattr(t, "do_lower_case", None) or t.init_kwargs.get("do_lower_case") for t in (teacher_tok, student_tok)
    ]
    if lower[0] != lower[1]:
        raise ValueError(f"student {student_id!r} lowercases differently (do_lower_case {lower[1]} vs {lower[0]})")


def parse_layers(spec: str) -> list[int]:
    """ "0,2,4" -> [0, 2, 4]; a clear error for anything else."""
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"student layers {spec!r} must be comma-separated layer indices, e.g. 0,2,4") from None


def student_tokenizer(cfg: DistillConfig, teacher_tok: Any) -> Any:
    """The tokenizer the student reads: the teacher's for "layers:...", else the student base model's own."""
    if subset_layers(cfg.student) is not None:
        return teacher_tok
    from transformers import AutoTokenizer

    from compression.base_models import resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(cfg.student))
    if not tokenizer.is_fast:
        raise ValueError(f"student {cfg.student!r} has no fast tokenizer (tokenizer.json); the service needs one")
    return tokenizer


def make_student(cfg: DistillConfig, teacher: Any, tokenizer: Any, labels: list[str]) -> Any:
    """Build the student model from `cfg.student` (and `cfg.student_layers`); `tokenizer` is the student's."""
    layers = subset_layers(cfg.student)
    if layers is not None:
        return student_from_teacher_layers(teacher, layers)
    check_label_order(cfg.student, labels)
    own_tok, student = load_classifier(cfg.student, labels)
    # The transfer set was encoded with `tokenizer`: the student must read the same token ids.
    check_same_tokenizer(tokenizer, own_tok, cfg.student)
    if cfg.student_layers:
        student = student_from_teacher_layers(student, parse_layers(cfg.student_layers))
    return student


def check_label_order(student_id: str, labels: list[str]) -> None:
    """Refuse a trained student (local package or HF id) whose head rows are the teacher's labels reordered."""
    from transformers import AutoConfig

    from compression.base_models import resolve_base_model

    id2label = AutoConfig.from_pretrained(resolve_base_model(student_id)).id2label
    own = [id2label[i] for i in range(len(id2label))]
    if sorted(own) == sorted(labels) and own != labels:
        raise ValueError(
            f"student {student_id!r} has the teacher's labels in another order; its classifier rows would be "
            "read against the wrong soft targets (re-save it with the teacher's label order)"
        )


class DistillSplit(EncodedSplit):
    """Encoded texts with the teacher's logits attached to each row."""

    def __init__(
        self,
        split: Split,
        tokenizer: Any,
        label2id: dict[str, int],
        max_length: int,
        logits: Any,
        generated: dict[str, int] | None = None,
        hidden: list[Any] | None = None,
        soft_targets: bool = True,
        cache_hits: int = 0,
    ) -> None:
        super().__init__(split, tokenizer, label2id, max_length)
        self.generated = generated or {}  # rows the teacher labelled, by kind (augmented, crossovers)
        self.soft_targets = soft_targets  # False: `logits` are zeros that nothing reads (see `needs_teacher_pass`)
        self.cache_hits = cache_hits  # parts of the transfer set whose logits a logits cache held
        for row, row_logits in zip(self.rows, logits, strict=True):
            row["teacher_logits"] = row_logits
        if hidden is not None:  # the teacher's states at the mapped layers, for the hidden-state term
            for row, row_hidden in zip(self.rows, hidden, strict=True):
                row["teacher_hidden"] = row_hidden


def teacher_logits(teacher: Any, dataset: EncodedSplit, tokenizer: Any, batch_size: int = 128) -> Any:
    """Precompute the teacher's logits once over the train split (saves a teacher pass per step)."""
    return teacher_outputs(teacher, dataset, tokenizer, batch_size)[0]


def teacher_outputs(
    teacher: Any,
    dataset: EncodedSplit,
    tokenizer: Any,
    batch_size: int = 128,
    hidden_layers: list[int] | None = None,
    target: str = "cls",
) -> tuple[Any, list[Any] | None]:
    """One teacher pass: logits, and per row its states at `hidden_layers` of hidden_states, or None.

    A row's states are (layers, H) for the [CLS] target, (its tokens, layers, H) for the token target.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    device = next(teacher.parameters()).device
    logits, hidden = [], []
    teacher.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(dataset), batch_size), desc="teacher logits", leave=False):
            rows = [
                {k: v for k, v in dataset[i].items() if k != "labels"}
                for i in range(start, min(len(dataset), start + batch_size))
            ]
            batch = collate(rows).to(device)
            out = teacher(**batch, output_hidden_states=bool(hidden_layers))
            logits.append(out.logits.float().cpu())
            if hidden_layers:
                states = torch.stack([out.hidden_states[i] for i in hidden_layers], 2).float().cpu()
                if target == "cls":
                    hidden.extend(states[:, 0].clone())  # a copy: views would keep every token alive
                else:  # unpadded, so that the collator can pad each batch to its own length
                    lengths = batch["attention_mask"].sum(1).tolist()
                    hidden.extend(row[:n].clone() for row, n in zip(states, lengths, strict=True))
    return torch.cat(logits), (hidden if hidden_layers else None)


def _collator(tokenizer: Any) -> Any:
    import torch
    from torch.nn.utils.rnn import pad_sequence
    from transformers import DataCollatorWithPadding

    pad = DataCollatorWithPadding(tokenizer)
    extra = ("teacher_logits", "teacher_hidden")

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = pad([{k: v for k, v in r.items() if k not in extra} for r in rows])
        batch["teacher_logits"] = torch.stack([r["teacher_logits"] for r in rows])
        if "teacher_hidden" in rows[0]:
            hidden = [r["teacher_hidden"] for r in rows]
            # Token states are padded like the inputs (to the longest in the batch); [CLS] states just stack.
            batch["teacher_hidden"] = (
                pad_sequence(hidden, batch_first=True) if hidden[0].dim() == 3 else torch.stack(hidden)
            )
        return batch

    return collate


def _trainer_class() -> type:
    import torch
    from transformers import Trainer

    class DistillationTrainer(Trainer):
        """Trainer whose loss mixes hard labels and the teacher's soft targets."""

        def __init__(
            self,
            *args: Any,
            alpha: float,
            temperature: float,
            logit_mse: float,
            hidden_weight: float = 0.0,
            hidden_target: str = "cls",
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.alpha, self.temperature, self.logit_mse = alpha, temperature, logit_mse
            self.hidden_weight, self.hidden_target = hidden_weight, hidden_target

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            teacher = inputs.pop("teacher_logits")
            teacher_hidden = inputs.pop("teacher_hidden", None)
            labels = inputs.pop("labels")
            use_hidden = bool(self.hidden_weight) and teacher_hidden is not None
            outputs = model(**inputs, output_hidden_states=use_hidden)
            loss = distillation_loss(
                outputs.logits, teacher.to(outputs.logits.dtype), labels, self.alpha, self.temperature, self.logit_mse
            )
            if use_hidden:  # hidden_states[0] is the embeddings; the layers' outputs follow
                states = torch.stack(outputs.hidden_states[1:], 2)  # rows, tokens, layers, H
                target = teacher_hidden.to(states.dtype)
                if self.hidden_target == "cls":
                    term = pkd_loss(states[:, 0], target)
                else:
                    term = token_mse_loss(states, target, inputs["attention_mask"])
                loss = loss + self.hidden_weight * term
            return (loss, outputs) if return_outputs else loss

    return DistillationTrainer


def train_student(cfg: DistillConfig, teacher: Any, tokenizer: Any, train: DistillSplit, labels: list[str]) -> Any:
    """Build and train one student; returns the trained model."""
    from transformers import set_seed

    if reads_soft_targets(cfg) and not train.soft_targets:
        raise ValueError(
            f"alpha={cfg.alpha} needs the teacher's logits, but this transfer set was prepared for alpha = 1 "
            "without them (prepare it with teacher_pass=True)"
        )
    set_seed(cfg.seed)
    student = make_student(cfg, teacher, tokenizer, labels)
    with tempfile.TemporaryDirectory() as work:
        args = training_args(cfg, Path(work))
        args.remove_unused_columns = False  # keep teacher_logits for compute_loss
        trainer = _trainer_class()(
            model=student,
            args=args,
            train_dataset=train,
            data_collator=_collator(tokenizer),
            alpha=cfg.alpha,
            temperature=cfg.temperature,
            logit_mse=cfg.logit_mse,
            hidden_weight=cfg.hidden_weight,
            hidden_target=cfg.hidden_target,
        )
        trainer.train()
    return student.eval()


def accuracy(model: Any, tokenizer: Any, split: Split, label2id: dict[str, int], max_length: int) -> float:
    """Plain arg-max accuracy (no oos threshold) on a split."""
    import torch

    correct = 0
    with torch.inference_mode():
        for start in range(0, len(split), 256):
            texts = split.texts[start : start + 256]
            enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            pred = model(**enc.to(model.device)).logits.argmax(-1).tolist()
            correct += sum(p == label2id[g] for p, g in zip(pred, split.labels[start : start + 256], strict=True))
    return correct / len(split)


def load_teacher(teacher_dir: Path) -> tuple[Any, Any]:
    """Teacher model + tokenizer from a package (safetensors only)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (Path(teacher_dir) / "model.safetensors").is_file():
        raise FileNotFoundError(f"no teacher at {teacher_dir}: run `python -m compression finetune` first")
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, use_safetensors=True).eval()
    return teacher, tokenizer


def ensemble_logits(
    cfg: DistillConfig, logits: Any, tokenizer: Any, labels: list[str], split: Split, device: str
) -> Any:
    """The mean of the teacher's and every extra teacher's logits, columns in the teacher's label order."""
    import torch

    total = logits.clone()
    for path in cfg.extra_teachers:
        extra, extra_tok = load_teacher(path)
        check_same_tokenizer(tokenizer, extra_tok, str(path))
        extra_labels = [extra.config.id2label[i] for i in range(extra.config.num_labels)]
        if set(extra_labels) != set(labels):
            raise ValueError(
                f"extra teacher {path} has other labels than the teacher; both must be trained on CLINC150"
            )
        order = torch.tensor([extra_labels.index(label) for label in labels])
        extra.to(device)
        plain = EncodedSplit(split, extra_tok, {label: i for i, label in enumerate(extra_labels)}, cfg.max_length)
        total += teacher_logits(extra, plain, extra_tok)[:, order]
        del extra
    return total / (1 + len(cfg.extra_teachers))


def teacher_rule(teacher_dir: Path, labels: list[str]) -> Any:
    """The teacher package's manifest, whose oos rule (score + threshold) labels generated queries."""
    from app.package import PackageError, read_manifest

    try:
        manifest = read_manifest(Path(teacher_dir))
    except (PackageError, FileNotFoundError, OSError) as exc:
        raise ValueError(
            f"crossover augmentation labels queries with the teacher's oos rule; {teacher_dir} is not a calibrated "
            f"package ({exc}). Run `python -m compression finish --package {teacher_dir}` first."
        ) from exc
    if manifest.labels != labels:
        raise ValueError(f"{teacher_dir}: manifest labels differ from the model's config labels")
    return manifest


def teacher_decisions(manifest: Any, logits: Any, labels: list[str]) -> list[str]:
    """The teacher's answers with its own oos rule: the hard labels of generated queries."""
    from app.decision import decide

    oos = labels.index(manifest.oos_label)
    pred, _ = decide(logits, oos, manifest.oos_threshold, manifest.oos_score)
    logger.info(
        "teacher decisions: %d of %d generated queries are %s", int((pred == oos).sum()), len(pred), labels[oos]
    )
    return [labels[i] for i in pred.tolist()]


def hidden_layers(cfg: DistillConfig, teacher: Any) -> list[int]:
    """The teacher `hidden_states` indices the hidden-state term reads; refuses a student it cannot compare."""
    if cfg.hidden_target not in HIDDEN_TARGETS:
        raise ValueError(f"hidden_target {cfg.hidden_target!r} is not one of {HIDDEN_TARGETS}")
    n, kept = teacher.config.num_hidden_layers, subset_layers(cfg.student)
    if kept is not None:
        count = len(kept)
    else:
        from transformers import AutoConfig

        from compression.base_models import resolve_base_model

        config = AutoConfig.from_pretrained(resolve_base_model(cfg.student))
        if config.hidden_size != teacher.config.hidden_size:
            raise ValueError(
                f"--hidden-weight compares hidden states, so the student needs the teacher's hidden size: "
                f"{cfg.student!r} has {config.hidden_size}, the teacher {teacher.config.hidden_size} "
                "(use layers:... or --hidden-weight 0)"
            )
        count = len(parse_layers(cfg.student_layers)) if cfg.student_layers else config.num_hidden_layers
    return teacher_layer_map(cfg.student, n, count)


def reads_soft_targets(cfg: DistillConfig) -> bool:
    """Whether the loss reads the teacher's logits: alpha = 1 alone is cross-entropy on hard labels."""
    return cfg.alpha < 1.0 or bool(cfg.logit_mse)


def needs_teacher_pass(cfg: DistillConfig) -> bool:
    """Whether training reads anything the teacher computes: its logits, its states, or its labels for new queries."""
    return reads_soft_targets(cfg) or bool(cfg.hidden_weight or cfg.augment.copies or cfg.augment.crossovers)


def prepare(
    cfg: DistillConfig, data: ClincData, teacher_pass: bool = False
) -> tuple[Any, Any, DistillSplit, dict[str, int]]:
    """Load the teacher and the transfer set (train + noisy copies + crossovers) with precomputed soft targets.

    Returns (teacher, the student's tokenizer, the transfer set encoded with it, label2id).

    The teacher pass is skipped when `cfg` reads no soft targets, unless `teacher_pass` (e.g. a search over alpha).
    """
    import torch

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    teacher, tokenizer = load_teacher(cfg.teacher_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher.to(device)  # only for the logits pass; training moves the student itself
    # The student keeps the teacher's logit order, so soft targets line up label by label.
    labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    if set(labels) != set(data.labels):
        raise ValueError("the teacher's labels differ from the dataset's; distill from a teacher trained on it")
    label2id = {label: i for i, label in enumerate(labels)}
    rule = teacher_rule(cfg.teacher_dir, labels) if cfg.augment.crossovers else None  # fail before any work
    layers = hidden_layers(cfg, teacher) if cfg.hidden_weight else None
    # Soft targets are the teacher's logits on the same texts, each model reading them with its own tokenizer.
    student_tok = student_tokenizer(cfg, tokenizer)
    if cfg.hidden_weight and cfg.hidden_target == "tokens" and student_tok.get_vocab() != tokenizer.get_vocab():
        raise ValueError("--hidden-target tokens compares token by token: the student needs the teacher's tokenizer")

    cache_hits: list[bool] = []

    def soft_targets(split: Split) -> tuple[Any, Any]:
        def compute() -> tuple[Any, Any]:
            plain = EncodedSplit(split, tokenizer, label2id, cfg.max_length)
            logits, hidden = teacher_outputs(teacher, plain, tokenizer, hidden_layers=layers, target=cfg.hidden_target)
            if cfg.extra_teachers:  # the hidden-state targets stay the main teacher's: the student mirrors its layers
                logits = ensemble_logits(cfg, logits, tokenizer, labels, split, device)
            return logits, hidden

        if cfg.logits_cache is None or layers:  # hidden states are too large to keep: only logits are cached
            return compute()
        teachers = [cfg.teacher_dir, *cfg.extra_teachers]
        logits, hit = cached_logits(cfg.logits_cache, teachers, split.texts, cfg.max_length, lambda: compute()[0])
        cache_hits.append(hit)
        return logits, None

    texts, hard = list(data.train.texts), list(data.train.labels)
    computed = teacher_pass or needs_teacher_pass(cfg)
    if computed:
        logits, hidden = soft_targets(data.train)
    else:  # an alpha = 1 twin: the pass is minutes of CPU per run for targets the loss multiplies by zero
        logits, hidden = torch.zeros(len(data.train), len(labels)), None
        logger.info("alpha = 1 and no teacher term: the teacher's logits are not computed")
    parts, hidden_rows = [logits], hidden
    generated = {"augmented": 0, "crossovers": 0}

    def add(kind: str, extra: list[str], label: Any) -> None:
        """Generated queries: the teacher's logits as soft targets, label(logits) as their hard labels."""
        # Placeholder labels for encoding only; the real hard labels come from the teacher.
        extra_logits, extra_hidden = soft_targets(Split(extra, [labels[0]] * len(extra)))
        texts.extend(extra)
        hard.extend(label(extra_logits))
        parts.append(extra_logits)
        if hidden_rows is not None:
            hidden_rows.extend(extra_hidden)
        generated[kind] = len(extra)
        logger.info("transfer set: + %d %s queries", len(extra), kind)

    if cfg.augment.copies:  # noisy copies keep their intent: the teacher's arg-max labels them
        add("augmented", augment(data.train.texts, cfg.augment), lambda lg: [labels[i] for i in lg.argmax(-1).tolist()])
    if cfg.augment.crossovers:  # often no intent: the teacher's oos rule decides
        # With extra teachers the logits are their mean; the rule is still the main teacher's (close enough).
        extra = crossover(data.train.texts, data.train.labels, cfg.augment.crossovers, cfg.augment.seed)
        add("crossovers", extra, lambda lg: teacher_decisions(rule, lg.numpy(), labels))
    split, logits = Split(texts, hard), torch.cat(parts)
    train = DistillSplit(
        split, student_tok, label2id, cfg.max_length, logits, generated, hidden_rows, computed, sum(cache_hits)
    )
    if hidden_rows is not None:  # token targets grow with the transfer set: say what they cost
        size = sum(h.numel() * h.element_size() for h in hidden_rows) / 2**20
        logger.info("hidden-state targets (%s, teacher layers %s): %.0f MB", cfg.hidden_target, layers, size)
    return teacher, student_tok, train, label2id


def logits_note(cfg: DistillConfig, train: DistillSplit) -> str:
    """How the run got its soft targets, for the manifest."""
    if not train.soft_targets:
        return "not computed (alpha = 1 and no teacher term: the loss reads none)"
    note = "precomputed once over the transfer set"
    if cfg.extra_teachers:
        note += f", mean of {1 + len(cfg.extra_teachers)} teachers"
    if train.cache_hits:
        note += f"; {train.cache_hits} part(s) read from the logits cache {cfg.logits_cache}"
    return note


def distill(cfg: DistillConfig, data: ClincData | None = None, prepared: tuple | None = None) -> Path:
    """Distill and save the student package at cfg.output_dir."""
    data = data or load_clinc()
    teacher, tokenizer, train, label2id = prepared or prepare(cfg, data)
    labels = list(label2id)
    student = train_student(cfg, teacher, tokenizer, train, labels)
    val_acc = accuracy(student, tokenizer, data.validation, label2id, cfg.max_length)
    logger.info("student %s: validation accuracy %.4f (alpha=%s, T=%s)", cfg.name, val_acc, cfg.alpha, cfg.temperature)
    skip = ("extra_source", "extra_teachers")  # extra_teachers is recorded in the source below
    hyper = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k not in skip}
    source = {
        "base_model": cfg.student,
        "teacher": str(cfg.teacher_dir),
        "dataset": data.source,
        "step": "distill",
        "teacher_logits": logits_note(cfg, train),
        "transfer_set": {
            "train": len(data.train),
            "augmented": train.generated.get("augmented", 0),
            "augmented_labels": "teacher arg-max",
            "crossovers": train.generated.get("crossovers", 0),
            "crossover_labels": "teacher decision (its oos rule)",
        },
        "hidden_teacher_layers": hidden_layers(cfg, teacher) if cfg.hidden_weight else None,
        "extra_teachers": [str(p) for p in cfg.extra_teachers],
        "hyperparameters": hyper,
        "validation_accuracy": val_acc,
        **cfg.extra_source,
    }
    save_torch_package(
        student,
        tokenizer,
        cfg.output_dir,
        name=cfg.name,
        labels=labels,
        oos_label=data.oos_label,
        domains=data.domains,
        max_length=cfg.max_length,
        source=source,
    )
    return Path(cfg.output_dir)
