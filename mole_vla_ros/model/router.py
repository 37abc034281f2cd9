"""STAR: the Spatial-Temporal Aware Router that picks which LLM layers run for each sample (spec 2.1-2.4).

    W_p        base_proj:        Linear(D -> d1), shared by both branches (Eq. 8)
    S          spatial_router:   mean of W_p(visual tokens) -> Linear -> GELU -> Linear(-> N)             (Eq. 9)
    T          temporal_router:  1-layer TransformerEncoder over W_p(text tokens), padding masked, masked mean
               time_proj:        Linear(d1 -> N)                                                         (Eq. 10)
    alpha      temp_controller:  sigmoid(Linear(pooled text) + temp_bias)                                 (Eq. 11)
    p = softmax(alpha * (S + T) [+ depth prior] [+ Gumbel noise in training]);  M = top-k(p);  G = M + (p - p.detach())

Differences from the released code, on purpose:
- padding tokens are excluded from the temporal encoder (key padding mask) and from both mean pools, so the choice
  does not depend on how much right padding a batch adds;
- the temperature reads the pooled text feature instead of the BOS token, which is the same for every input and
  made alpha a learned constant (set temperature_source="bos" for the code's behaviour);
- G is built as M + (p - p.detach()): its forward value is exactly M (M - p.detach() + p can be off by one ulp).

Added (off by default): loss.partition_weight > 0 makes MoLeVLA.compute_loss add `partition_loss` of the choice's
logits, a router loss that is not the paper's: it rewards a decided choice per sample and an even use of the layers
over the batch, whose optimum gives different samples different sets (on the bundled data it did not: see the
function).

Added (off by default): router.depth_prior > 0 adds a fixed ramp, 0 for layer 0 down to -depth_prior for layer N-1,
so that an untrained router picks the first k layers (early exit) and training moves a sample's choice only where
its learned scores beat the ramp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .configuration import SKIP_MODES, RouterConfig
from .cuda_graphs import DropsGraphsWhenMoved, GraphedFunction

# a margin (RouterChoice.margins) below this is a near-tie: the set follows tiny score differences, not a preference
NEAR_TIE_MARGIN = 0.01


@dataclass
class RouterChoice:
    """What the router decided for a batch.

    indices:  per sample, the layers that ran, ascending (tuple of ints).
    probs:    [B, N] router softmax (detached).
    selected: [B, N] bool mask of running layers.
    gate:     [B, N] straight-through gate (value == selected; carries gradient in STAR training), or None.
    balance:  scalar balance loss mean(M * p) (the code's formula), 0 when the router did not pick.
    logits:   [B, N] the router's noise-free logits (MoLeVLA.compute_loss takes `partition_loss` of them).
    k:        number of active layers per sample.
    mode:     skip mode used.
    selected_host: `selected` on the CPU (one device->host copy per forward, reused by the layer loop).
    """

    indices: list[tuple[int, ...]]
    probs: torch.Tensor
    selected: torch.Tensor
    gate: torch.Tensor | None
    balance: torch.Tensor
    logits: torch.Tensor
    k: int
    mode: str
    selected_host: torch.Tensor | None = None

    def margins(self) -> torch.Tensor | None:
        """[B] how decided the choice is: the logit gap between the k-th and the (k+1)-th layer (log-probabilities
        differ as the logits do); None when every layer runs. Far below 1, small input changes flip the choice."""
        if self.k >= self.probs.shape[-1]:
            return None
        # from the logits, not log(probs): a gap of ~100 underflows probs to 0 and made it inf or nan
        top = self.logits.detach().float().topk(self.k + 1, dim=-1).values
        return top[:, -2] - top[:, -1]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of x [B, L, C] counting only mask==1 positions."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def partition_loss(logits: torch.Tensor, k: int, cap: float = 0.0) -> torch.Tensor:
    """A decided choice per sample, layers spread over the batch: `undecided - spread`, each term in [0, 1].

    t is the point midway between a sample's k-th and (k+1)-th logit (held fixed) and sigmoid(z_i - t) layer i's
    inclusion probability, above 1/2 exactly for the k layers the router runs.
    - undecided: the cross-entropy of those probabilities against the router's own choice, over log 2: 1 when every
      score ties, 0 as the margin grows. Its gradient at a tie is not zero, so it moves a router out of the near-ties
      that the balance loss, mean(M * p), settles in (that loss is lowest when every sample's scores tie).
    - spread: the entropy over layers of the batch's mean inclusion, over log N: 1 when every layer runs equally often.
      A router that gives every sample one set gets log(k)/log(N) (2/3 for 4 of 8), so below that the loss falls only
      as samples are split between sets.
    The loss is 0 for tied scores, about -log(k)/log(N) for one decided set, about -1 for decided sets that use every
    layer equally: a mutual-information router loss, as in mixture-of-experts work (e.g. Mod-Squad), not the paper's.

    Tried on the bundled model's data (models/default/MODEL_CARD.md, "A partition loss"): it does not split the
    samples. The spread term pushes every sample the same way, the undecided term locks in whatever set the batch
    already runs, and under Adam the logits grow to hundreds (margins of 20 to 50), so the router ends on one set
    for every sample, as without the balance loss (at weight 0.002 its k = 4 error was below trained early exit's at
    three training seeds: see the card). `cap` > 0 (router.partition_cap) stops this loss's push once a logit is that
    far from the midpoint (beyond it the term is constant); the other losses' gradients through the gate can still
    move it (at cap 2 the bundled recipe's margin ended at 16.6 instead of 49.9).
    """
    z = logits.float()
    n = z.shape[-1]
    if not 1 <= k < n:
        return z.sum() * 0.0
    top = z.detach().topk(k + 1, dim=-1).values
    distance = z - 0.5 * (top[:, k - 1] + top[:, k])[:, None]
    far = distance.abs().clamp(max=cap) if cap > 0 else distance.abs()  # no push beyond `cap` from the midpoint
    undecided = -F.logsigmoid(far).mean() / math.log(2.0)
    use = torch.sigmoid(distance).mean(0)
    use = use / use.sum()
    spread = -(use * use.clamp_min(1e-12).log()).sum() / math.log(n)
    return undecided - spread


class STARRouter(DropsGraphsWhenMoved, nn.Module):
    """Maps the (normed) input embeddings of one sample to N layer logits. See the module docstring."""

    def __init__(self, cfg: RouterConfig, hidden_size: int, num_layers: int):
        super().__init__()
        self.cfg = cfg
        self.num_layers = num_layers
        d1 = cfg.proj_dim
        self.base_proj = nn.Linear(hidden_size, d1)
        self.spatial_router = nn.Sequential(
            nn.Linear(d1, cfg.spatial_hidden), nn.GELU(), nn.Linear(cfg.spatial_hidden, num_layers, bias=False)
        )
        layer = nn.TransformerEncoderLayer(
            d_model=d1,
            nhead=cfg.temporal_heads,
            dim_feedforward=cfg.temporal_ff,
            dropout=cfg.temporal_dropout,
            activation="gelu",
            batch_first=True,
        )
        # nested tensors would change numerics between padded and unpadded batches; keep the plain path
        self.temporal_router = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.time_proj = nn.Linear(d1, num_layers, bias=False)
        self.temp_controller = nn.Linear(d1, 1)
        self.temp_bias = nn.Parameter(torch.ones(1))
        # training only, with cfg.gumbel_noise: the Gumbel noise is multiplied by this (the trainer's annealing
        # schedule sets it each step; 0 = the noise-free choice the router makes at inference)
        self.noise_scale = 1.0
        self.reset_parameters()
        # inference on a GPU replays the logits as a CUDA graph per prompt length (cuda_graphs.py): ~20 small kernels
        self.graphs = GraphedFunction(self._logits, "the STAR router")

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # what the code gets from HF _init_weights under strict=False loading: N(0, 0.02), zero bias, temp_bias = 1
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.02)
                if m.bias is not None:
                    m.bias.zero_()
        self.temp_bias.fill_(1.0)

    def logits(
        self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, N], temperature alpha [B, 1]) from visual tokens [B, P, D] and text tokens [B, T, D].

        text_mask [B, T]: 1 for real tokens (BOS, prompt, EOS), 0 for right padding.
        """
        return self._logits(visual, text, text_mask) if self.training else self.graphs(visual, text, text_mask)

    def _logits(
        self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # mean(W_p v) == W_p mean(v) (linear): pooling first costs one projection instead of one per visual token,
        # the same value as the code's mean-pool before the MLP
        s = self.spatial_router(self.base_proj(visual.mean(1)))
        pt = self.base_proj(text)
        enc = self.temporal_router(pt, src_key_padding_mask=~text_mask.bool())
        pooled = masked_mean(enc, text_mask)
        t = self.time_proj(pooled)
        temp_in = pooled if self.cfg.temperature_source == "text_mean" else pt[:, 0]
        alpha = torch.sigmoid(self.temp_controller(temp_in) + self.temp_bias)
        logits = (s + t) * alpha
        if self.cfg.depth_prior:
            logits = logits + self.depth_ramp(logits.device, logits.dtype)
        return logits, alpha

    def depth_ramp(self, device=None, dtype=None) -> torch.Tensor:
        """[N] the fixed prior added to the logits: 0 for the first layer down to -cfg.depth_prior for the last."""
        return torch.linspace(0.0, -float(self.cfg.depth_prior), self.num_layers, device=device, dtype=dtype)

    def choose(
        self,
        logits: torch.Tensor,
        k: int,
        mode: str = "star",
        generator: torch.Generator | None = None,
    ) -> RouterChoice:
        """Turn logits into the per-sample layer choice for skip `mode` with k active layers."""
        b, n = logits.shape
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
            raise ValueError(f"active_layers must be an integer in 1..{n} (the LLM has {n} layers), got {k!r}.")
        if mode not in SKIP_MODES:
            raise ValueError(f"skip_mode must be one of {list(SKIP_MODES)}, got {mode!r}.")
        probs = torch.softmax(logits.float(), dim=-1)
        zero = logits.sum() * 0.0
        if mode == "full" or (mode == "star" and k == n):
            selected = torch.ones(b, n, dtype=torch.bool, device=logits.device)
            gate = None
            balance = (probs * selected).mean() if mode == "star" else zero
            if mode == "star" and self.training:
                gate = selected.to(probs.dtype) + (probs - probs.detach())
        elif mode == "star":
            scores, ranked = probs, logits.float()
            if self.training and self.cfg.gumbel_noise and self.noise_scale > 0:
                g = -torch.log(-torch.log(torch.rand(logits.shape, device=logits.device).clamp(1e-9, 1 - 1e-9)))
                ranked = (logits.float() + self.noise_scale * g) / self.cfg.gumbel_tau
                scores = torch.softmax(ranked, dim=-1)
            # rank the logits, not the probabilities: the order is the same, but where the logits spread by ~100 the
            # probabilities of all but the top layer underflow to 0 and top-k would pick among ties by index
            top = ranked.topk(k, dim=-1).indices
            selected = torch.zeros(b, n, dtype=torch.bool, device=logits.device).scatter_(1, top, True)
            # forward value exactly `selected`, gradient through the (possibly noisy) softmax
            gate = selected.to(scores.dtype) + (scores - scores.detach())
            balance = (selected.to(probs.dtype) * probs).mean()
        elif mode == "early":
            selected = torch.zeros(b, n, dtype=torch.bool, device=logits.device)
            selected[:, :k] = True
            gate, balance = None, zero
        else:  # random: k distinct layers per sample, reproducible through `generator`
            gen_device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.rand((b, n), generator=generator, device=gen_device).to(logits.device)
            top = noise.topk(k, dim=-1).indices
            selected = torch.zeros(b, n, dtype=torch.bool, device=logits.device).scatter_(1, top, True)
            gate, balance = None, zero
        sel_cpu = selected.detach().cpu()
        indices = [tuple(int(i) for i in row.nonzero().squeeze(1).tolist()) for row in sel_cpu]
        return RouterChoice(
            indices=indices,
            probs=probs.detach(),
            selected=selected,
            gate=gate,
            balance=balance,
            k=k if mode != "full" else n,
            mode=mode,
            selected_host=sel_cpu,
            logits=logits,
        )
