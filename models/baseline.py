"""The supervised baseline: modality experts fused by attention or a mixture of experts.

`Bundle` holds the inputs of N clips, one `ExpertInput` per expert (a clip-level matrix, a
list of sequences, or an audio/text pair of sequence lists) with a `present` mask.
`FusionClassifier` is scikit-learn-shaped: `__init__` stores settings, `fit` standardises,
trains with early stopping on validation weighted F1 and returns self (learned state ends in
`_`), `predict_proba` changes nothing and returns probabilities per head: "final" (the
fusion's output), "fused" (MoE: the attention-fused head) and "expert:<name>" (MoE: each
expert's own head, NaN where that expert is absent).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from torch.nn import functional as F

from models.nets import FUSIONS, AudioTextJoint, MLPExpert, NetConfig, TemporalExpert


@dataclass
class ExpertInput:
    name: str
    kind: str  # vector, sequence or joint
    present: np.ndarray  # (N,) bool
    x: np.ndarray | None = None  # vector: (N, D) float32
    # sequence: per clip a (T_i, D) array or None, as a list or anything indexable with a
    # `take(idx)` (storage.feature_cache.Ragged); joint: the audio side
    seqs: Sequence[np.ndarray | None] | None = None
    seqs2: Sequence[np.ndarray | None] | None = None  # joint: the text side

    def subset(self, idx: np.ndarray) -> ExpertInput:
        def take(seqs):
            if seqs is None:
                return None
            return seqs.take(idx) if hasattr(seqs, "take") else [seqs[i] for i in idx]

        return ExpertInput(
            self.name,
            self.kind,
            self.present[idx],
            None if self.x is None else self.x[idx],
            take(self.seqs),
            take(self.seqs2),
        )

    @property
    def dims(self) -> tuple[int, ...]:
        if self.kind == "vector":
            return (self.x.shape[1],)
        if self.kind == "sequence":
            return (_seq_dim(self.seqs),)
        return (_seq_dim(self.seqs), _seq_dim(self.seqs2))


def _pick(seqs: Sequence[np.ndarray | None], idx: np.ndarray) -> list[np.ndarray | None]:
    """The sequences of clips `idx`, through the sequence's own `views` where it has one."""
    return seqs.views(idx) if hasattr(seqs, "views") else [seqs[i] for i in idx]


def _seq_dim(seqs: list[np.ndarray]) -> int:
    return next(s.shape[1] for s in seqs if s is not None and s.size)


@dataclass
class Bundle:
    # A list, or a string array that takes an index array (tasks.train.build_bundle's: Arrow).
    clip_ids: Sequence[str]
    experts: list[ExpertInput]

    def __len__(self) -> int:
        return len(self.clip_ids)

    def subset(self, idx) -> Bundle:
        idx = np.asarray(idx)
        ids = self.clip_ids[idx] if hasattr(self.clip_ids, "dtype") else [self.clip_ids[i] for i in idx]
        return Bundle(ids, [e.subset(idx) for e in self.experts])

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experts]


def _pad(
    seqs: list[np.ndarray], present: np.ndarray, max_len: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) zero-padded and (B, T) padding mask. Absent or empty sequences become one
    unmasked zero step, so attention never sees an all-padding row (masked later, at fusion)."""
    lens = [
        min(len(s), max_len) if p and s is not None and len(s) else 1
        for s, p in zip(seqs, present, strict=True)
    ]
    x = np.zeros((len(seqs), max(lens), dim), np.float32)
    for i, (s, p) in enumerate(zip(seqs, present, strict=True)):
        if p and s is not None and len(s):
            x[i, : lens[i]] = s[:max_len]
    pad = np.arange(max(lens))[None, :] >= np.asarray(lens)[:, None]
    return torch.from_numpy(x), torch.from_numpy(pad)


# Rows of an expert's input read at a time to fit its scaler.
STATS_CHUNK = 4096


def _frames(seqs: list[np.ndarray | None], idx: np.ndarray) -> np.ndarray:
    """The frames of the clips `idx` (those with any), one after another."""
    picked = [s for s in _pick(seqs, idx) if s is not None and len(s)]
    return np.concatenate(picked) if picked else np.zeros((0, 0), np.float32)


def column_stats(read: Callable[[np.ndarray], np.ndarray], rows: np.ndarray,
                 chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std + 1e-6) per column, float32, of the rows `read(rows)` gives, read `chunk` of
    `rows` at a time: bit for bit `r.mean(0)` and `r.std(0) + 1e-6` of them all in one array
    (numpy sums over the first axis one row after another, in the array's dtype; each chunk's
    sum starts from the rows before it). No row: (0, 1)."""
    chunk = chunk or STATS_CHUNK
    parts = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]

    def column_sum(chunks: Iterator[np.ndarray]) -> tuple[np.ndarray | None, int]:
        """(the sum of the chunks' rows, one row after another (None: no row), how many)."""
        total, n = None, 0
        for x in chunks:
            if len(x):
                total = x.sum(0) if total is None else np.add.reduce(np.concatenate([total[None], x]), axis=0)
                n += len(x)
        return total, n

    total, n = column_sum(map(read, parts))
    if total is None:
        return np.asarray(0.0, np.float32), np.asarray(1.0, np.float32)
    mean = np.true_divide(total, n, out=total, casting="unsafe")
    squares, _ = column_sum((d := read(part) - mean) * d for part in parts)
    var = np.true_divide(squares, n, out=squares, casting="unsafe")
    return mean.astype(np.float32), (np.sqrt(var, out=var) + 1e-6).astype(np.float32)


@dataclass
class FusionClassifier:
    labels: tuple[str, ...]
    fusion: str = "moe"
    hidden: int = 64
    dropout: float = 0.3
    epochs: int = 80
    patience: int = 12
    lr: float = 1e-3
    weight_decay: float = 1e-3
    batch_size: int = 64
    class_weighted: bool = False
    aux_weight: float = 0.5
    max_seq: int = 96
    seed: int = 0
    # Pseudo-labelled rows (`fit(pseudo=...)`) drawn afresh each epoch, as a multiple of the
    # human-labelled rows (None: every one, every epoch). Bounds a mining round's training
    # time by the human labels instead of the accepted ones (docs/scale.md).
    pseudo_ratio: float | None = None
    # torch intra-op threads while fitting and predicting. These nets are small (hidden 64,
    # batches of 64): syncing a second thread costs more than it saves, and on a shared 2-core
    # machine 2 threads fitted 7-16x slower than 1 (bench/scale_pool.py, docs/scale.md).
    # Parallelism belongs across folds or processes, not inside one batch.
    threads: int = 1
    history_: list[dict] = field(default_factory=list, init=False, repr=False)

    # ---- inputs -------------------------------------------------------------------------
    def _fit_scalers(self, bundle: Bundle, rows: np.ndarray) -> None:
        """Per expert input, mean and std over the present ones among `rows` (over their frames,
        for a sequence), read a chunk of rows at a time (`column_stats`): the rows are never
        copied out of the bundle at once (at 100,000 candidates a mining round's ~28,000
        training rows of the text features are 44 MB, and numpy's std held two more copies)."""
        self.scalers_ = {}
        for e in bundle.experts:
            chosen = rows[e.present[rows]]
            parts = []
            if e.kind == "vector":
                parts = [lambda c, x=e.x: x[c]]
            else:
                for seqs in (e.seqs, e.seqs2):
                    if seqs is not None:
                        parts.append(lambda c, seqs=seqs: _frames(seqs, c))
            self.scalers_[e.name] = [column_stats(part, chosen) for part in parts]

    def _tensors(self, bundle: Bundle, idx: np.ndarray) -> tuple[list, torch.Tensor]:
        inputs = []
        for e in bundle.experts:
            present = e.present[idx]
            stats = self.scalers_[e.name]
            if e.kind == "vector":
                m, s = stats[0]
                x = np.where(present[:, None], (e.x[idx] - m) / s, 0.0).astype(np.float32)
                inputs.append((torch.from_numpy(x),))
            else:
                parts = []
                for j, seqs in enumerate((e.seqs, e.seqs2)[: 1 if e.kind == "sequence" else 2]):
                    m, s = stats[j]
                    # Only the frames `_pad` keeps are normalised: a long clip's sequence (10 Hz
                    # audio frames of an hour-long file: 36,000) is not copied whole per batch.
                    chosen = [None if q is None else ((q[: self.max_seq] - m) / s).astype(np.float32)
                              for q in _pick(seqs, idx)]
                    parts += list(_pad(chosen, present, self.max_seq, len(m)))
                inputs.append(tuple(parts))
        present = torch.from_numpy(np.stack([e.present[idx] for e in bundle.experts], axis=1))
        return inputs, present

    # ---- model --------------------------------------------------------------------------
    def _build(self, bundle: Bundle) -> None:
        cfg = NetConfig(hidden=self.hidden, dropout=self.dropout)
        encoders = {}
        for e in bundle.experts:
            if e.kind == "vector":
                encoders[e.name] = MLPExpert(e.dims[0], cfg)
            elif e.kind == "sequence":
                encoders[e.name] = TemporalExpert(e.dims[0], cfg)
            else:
                encoders[e.name] = AudioTextJoint(*e.dims, cfg)
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        self.expert_names_ = bundle.names
        self.expert_kinds_ = [e.kind for e in bundle.experts]
        self.expert_dims_ = [e.dims for e in bundle.experts]
        self.net_ = nn.ModuleDict(
            {
                "encoders": nn.ModuleDict(encoders),
                "fusion": FUSIONS[self.fusion](len(encoders), len(self.labels), cfg),
            }
        )

    def _forward(self, inputs: list, present: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.stack(
            [self.net_["encoders"][name](*x) for name, x in zip(self.expert_names_, inputs, strict=True)],
            dim=1,
        )
        return self.net_["fusion"](h, present)  # h: (B, E, H)

    # ---- training -----------------------------------------------------------------------
    def fit(
        self,
        bundle: Bundle,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        val: tuple[Bundle, np.ndarray] | tuple[Bundle, np.ndarray, np.ndarray] | None = None,
        pseudo: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> FusionClassifier:
        """Train; with `val`, keep the epoch of best validation weighted F1 and stop early.
        `pseudo`: (N,) bool, the pseudo-labelled rows; with `pseudo_ratio` set, each epoch
        trains on all the human-labelled rows and a fresh random draw of `pseudo_ratio` times
        as many pseudo-labelled ones (all of them when there are fewer).
        `rows`: train on these rows of `bundle` (`y` and the rest align with them), read in
        place: a fold worker does not copy its training rows out of the shared bundle (at
        100,000 candidates with 25,000 pseudo-labels, 72 MB of vectors by arithmetic). `val`
        may name its rows the same way: (bundle, y, rows)."""
        with torch_threads(self.threads):
            return self._fit(bundle, y, sample_weight, val, pseudo,
                             np.arange(len(bundle)) if rows is None else np.asarray(rows))

    def _epoch_rows(self, rng: np.random.Generator, n: int, pseudo: np.ndarray | None) -> np.ndarray:
        """One epoch's rows, shuffled: all of them, or every human row plus a draw of pseudo ones."""
        if pseudo is None or self.pseudo_ratio is None or not np.any(pseudo):
            return rng.permutation(n)
        pseudo = np.asarray(pseudo, bool)
        human, extra = np.flatnonzero(~pseudo), np.flatnonzero(pseudo)
        k = min(len(extra), int(np.ceil(self.pseudo_ratio * len(human))))
        if k < len(extra):
            extra = rng.choice(extra, k, replace=False)
        return rng.permutation(np.concatenate([human, extra]))

    def _fit(self, bundle, y, sample_weight, val, pseudo, rows) -> FusionClassifier:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        y = np.asarray(y)
        weight = (
            np.ones(len(y), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
        )
        self._fit_scalers(bundle, rows)
        self._build(bundle)
        counts = np.bincount(y, minlength=len(self.labels)).astype(np.float32)
        class_w = (
            (counts.sum() / np.maximum(counts, 1) / len(self.labels))
            if self.class_weighted
            else np.ones(len(self.labels), np.float32)
        )
        class_w = torch.from_numpy(class_w.astype(np.float32))
        opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best, best_state, stale = -1.0, None, 0
        self.history_ = []
        for epoch in range(self.epochs):
            self.net_.train()
            order = self._epoch_rows(rng, len(y), pseudo)
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                inputs, present = self._tensors(bundle, rows[idx])
                out = self._forward(inputs, present)
                loss = self._loss(
                    out, torch.from_numpy(y[idx]), torch.from_numpy(weight[idx]), present, class_w
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
            if val is None:
                continue
            score = f1_score(
                val[1],
                self.predict_proba(val[0], val[2] if len(val) > 2 else None)["final"].argmax(1),
                average="weighted",
                labels=range(len(self.labels)),
                zero_division=0,
            )
            self.history_.append({"epoch": epoch, "val_weighted_f1": float(score)})
            if score > best + 1e-6:
                best, stale = score, 0
                best_state = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
                self.best_epoch_ = epoch
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
            self.val_f1_ = best
        self.net_.eval()
        return self

    def _loss(self, out, y, weight, present, class_w) -> torch.Tensor:
        def ce(logits, mask=None):
            losses = F.cross_entropy(logits, y, weight=class_w, reduction="none") * weight
            if mask is None:
                return losses.mean()
            return (losses * mask).sum() / mask.sum().clamp(min=1.0)

        loss = ce(out["logits"])
        if "expert_logits" in out:  # MoE: every head learns too
            aux = [
                ce(out["expert_logits"][:, i], present[:, i].float())
                for i in range(out["expert_logits"].shape[1])
            ]
            aux.append(ce(out["fused_logits"]))
            loss = loss + self.aux_weight * torch.stack(aux).mean()
        return loss

    # ---- inference ----------------------------------------------------------------------
    @staticmethod
    def output_heads(fusion: str, experts: Sequence[str]) -> list[str]:
        """The heads `predict_proba` returns for `fusion` over `experts` (the bundle's names)."""
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        extra = ["fused", *(f"expert:{name}" for name in experts)] if FUSIONS[fusion].expert_heads else []
        return ["final", *extra]

    def predict_proba(self, bundle: Bundle, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per head, (N, labels) probabilities of the bundle's clips, or of its `rows` (indices,
        in that order; the pool is predicted in place, never copied out of the bundle)."""
        with torch_threads(self.threads):
            return self._predict_proba(bundle, np.arange(len(bundle)) if rows is None else np.asarray(rows))

    @torch.inference_mode()
    def _predict_proba(self, bundle: Bundle, rows: np.ndarray) -> dict[str, np.ndarray]:
        was_training = self.net_.training
        self.net_.eval()
        # Each head's rows are written into one array as the batches go (not kept per batch,
        # then concatenated and cast: three copies of the pool's probabilities at once).
        outs: dict[str, np.ndarray] = {}

        def put(head: str, start: int, probs: np.ndarray) -> None:
            if head not in outs:
                outs[head] = np.empty((len(rows), probs.shape[-1]), np.float32)
            outs[head][start : start + len(probs)] = probs

        for start in range(0, len(rows), 256):
            idx = rows[start : start + 256]
            inputs, present = self._tensors(bundle, idx)
            out = self._forward(inputs, present)
            put("final", start, torch.softmax(out["logits"], -1).numpy())
            if "expert_logits" in out:
                put("fused", start, torch.softmax(out["fused_logits"], -1).numpy())
                probs = torch.softmax(out["expert_logits"], -1).numpy()
                probs[~present.numpy()] = np.nan
                for i, name in enumerate(self.expert_names_):
                    put(f"expert:{name}", start, probs[:, i])
        self.net_.train(was_training)
        return outs

    # ---- persistence --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        settings = {k: v for k, v in asdict(self).items() if k != "history_"}
        payload = {
            "settings": settings,
            "state": self.net_.state_dict(),
            "scalers": self.scalers_,
            "experts": list(zip(self.expert_names_, self.expert_kinds_, self.expert_dims_, strict=True)),
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FusionClassifier:
        payload = torch.load(io.BytesIO(data), weights_only=False)
        model = cls(**{**payload["settings"], "labels": tuple(payload["settings"]["labels"])})
        model.scalers_ = payload["scalers"]
        stub = Bundle([], [_stub(name, kind, dims) for name, kind, dims in payload["experts"]])
        model._build(stub)
        model.net_.load_state_dict(payload["state"])
        model.net_.eval()
        return model


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block, then restored."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _stub(name: str, kind: str, dims: tuple[int, ...]) -> ExpertInput:
    """An empty ExpertInput with the right shape, to rebuild a network from its dims."""
    if kind == "vector":
        return ExpertInput(name, kind, np.zeros(0, bool), x=np.zeros((0, dims[0]), np.float32))
    seq = [np.zeros((1, dims[0]), np.float32)]
    seq2 = [np.zeros((1, dims[1]), np.float32)] if kind == "joint" else None
    return ExpertInput(name, kind, np.ones(1, bool), seqs=seq, seqs2=seq2)
