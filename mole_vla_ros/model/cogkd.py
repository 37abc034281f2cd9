"""CogKD: cognition self-knowledge distillation from a full-depth EMA teacher (spec 3.2, 3.3).

- `EMATeacher(student)`: a deep copy of the student's LLM layers and final norm (no router, no embeddings), frozen
  (requires_grad False, eval mode), run at full depth under no_grad on the SAME fused embeddings as the student.
  `update(student)` applies p_t <- d * p_t + (1 - d) * p_s to every LLM parameter whose name matches, except
  `embed_tokens.*` and the final `norm.weight` (as the released code's update_teacher), with d = loss.ema_decay.
- `cogkd_loss(fs, ft, mask, eos_index, mse_share)`: the code's token-weighted loss
      kd_elem = (1 - l1) * RKL + l1 * MSE        RKL over softmax of the hidden channels; MSE per element
      M       = softmax(c_t . Fs^T / sqrt d) * softmax(c_s . Fs^T / sqrt d)     (c = feature at the EOS token)
      loss    = mean over real tokens and channels of M * kd_elem               (padding masked out)
  The mask is not detached (the code lets gradients flow through it). M ~ 1/L^2, so the term is small by design.
- `form="paper"`: the paper's equations 14-17 (spec 3.1; 3.3 names it the paper-faithful alternative)
      M       = sigmoid(c_t . Fs^T / sqrt d) * sigmoid(c_s . Fs^T / sqrt d)      per token, in (0, 1)
      mimic   = mean over real tokens and channels of (M * Ft - M * Fs)^2          (the adapter mu = identity)
      RKL     = mean over real tokens of KL(softmax(M * Fs) || softmax(M * Ft))   (over the hidden channels)
      loss    = l1 * mimic + (1 - l1) * RKL
  Its scale is that of the feature mismatch itself, so with lambda2 = 0.5 it actually pulls on a small model,
  where the code's form measured ~1e-5 of the diffusion loss (models/default's card has the comparison).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _excluded(name: str) -> bool:
    # the final norm is `norm.weight`; per-layer norms (layers.i.input_layernorm.weight) are averaged
    return name.startswith("embed_tokens.") or name == "norm.weight"


class EMATeacher(nn.Module):
    """Full-depth frozen copy of the student's LLM, updated by EMA. Call it with (embeds, mask) -> features."""

    def __init__(self, student, decay: float | None = None):
        super().__init__()
        self.decay = float(student.config.loss.ema_decay if decay is None else decay)
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {self.decay}.")
        llm = student.llm
        # copy without the embedding table: the teacher reads the student's fused embeddings
        embed, llm.embed_tokens = llm.embed_tokens, None
        try:
            self.llm = copy.deepcopy(llm)
        finally:
            llm.embed_tokens = embed
        self.llm.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        # the teacher never trains (no dropout, frozen), whatever the caller's mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, embeds: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Final RMS-normed hidden states [B, L, D] of all N layers on the (detached) fused embeddings."""
        return self.llm.forward_full(embeds.detach(), mask)

    @torch.no_grad()
    def update(self, student) -> int:
        """EMA step from `student` (a MoLeVLA). Returns the number of parameter tensors averaged."""
        src = dict(student.llm.named_parameters())
        n = 0
        for name, p_t in self.llm.named_parameters():
            if _excluded(name) or name not in src:
                continue
            p_t.mul_(self.decay).add_(src[name].detach().to(p_t.dtype), alpha=1.0 - self.decay)
            n += 1
        return n


KD_FORMS = ("code", "paper")


def _paper_cogkd(fs, ft, valid, eos_index, mse_share):
    b, _length, d = fs.shape
    rows = torch.arange(b, device=fs.device)
    c_s, c_t = fs[rows, eos_index], ft[rows, eos_index]
    scale = d**-0.5
    m = torch.sigmoid(torch.einsum("bd,bld->bl", c_t, fs) * scale) * torch.sigmoid(
        torch.einsum("bd,bld->bl", c_s, fs) * scale
    )
    m = (m * valid)[..., None]
    ms, mt = m * fs, m * ft
    n_tokens = valid.sum().clamp(min=1)
    mimic = ((mt - ms) ** 2).sum() / (n_tokens * d)
    log_q, log_p = torch.log_softmax(ms, dim=-1), torch.log_softmax(mt, dim=-1)
    rkl = ((log_q.exp() * (log_q - log_p)).sum(-1) * valid).sum() / n_tokens
    return mse_share * mimic + (1.0 - mse_share) * rkl


def cogkd_loss(
    fs: torch.Tensor,
    ft: torch.Tensor,
    mask: torch.Tensor | None,
    eos_index: torch.Tensor,
    mse_share: float = 0.5,
    form: str = "code",
) -> torch.Tensor:
    """Token-weighted MSE + reverse-KL between student features fs and teacher features ft, both [B, L, D].

    mask [B, L] (1 = real token, None = no padding); eos_index [B] is the cognition token of each row.
    form: "code" (the released code, default) or "paper" (equations 14-17); see the module docstring.
    Computed in fp32 whatever the caller's autocast: under bf16 autocast the token-attention einsums would come out
    in bf16, which cannot hold the fp32 mask value (and the softmaxes would lose the small differences CogKD measures).
    """
    with torch.autocast(device_type=fs.device.type, enabled=False):
        return _cogkd_fp32(fs, ft, mask, eos_index, mse_share, form)


def _cogkd_fp32(fs, ft, mask, eos_index, mse_share, form):
    if fs.shape != ft.shape:
        raise ValueError(f"student and teacher features differ in shape: {list(fs.shape)} vs {list(ft.shape)}.")
    if form not in KD_FORMS:
        raise ValueError(f"CogKD form must be one of {list(KD_FORMS)}, got {form!r}.")
    fs32, ft32 = fs.float(), ft.float()
    b, length, d = fs32.shape
    valid = torch.ones(b, length, dtype=torch.bool, device=fs.device) if mask is None else mask.bool()
    if form == "paper":
        return _paper_cogkd(fs32, ft32, valid, eos_index, mse_share)
    mse = (ft32 - fs32) ** 2
    p = torch.softmax(ft32, dim=-1)
    q = torch.softmax(fs32, dim=-1)
    rkl = q * (torch.log(q + 1e-8) - torch.log(p + 1e-8))
    kd_elem = (1.0 - mse_share) * rkl + mse_share * mse
    rows = torch.arange(b, device=fs.device)
    c_s, c_t = fs32[rows, eos_index], ft32[rows, eos_index]
    scale = d**-0.5
    neg = torch.finfo(fs32.dtype).min
    a_s = torch.softmax((torch.einsum("bd,bld->bl", c_s, fs32) * scale).masked_fill(~valid, neg), dim=-1)
    a_t = torch.softmax((torch.einsum("bd,bld->bl", c_t, fs32) * scale).masked_fill(~valid, neg), dim=-1)
    weight = (a_t * a_s) * valid
    return (weight[..., None] * kd_elem).sum() / (valid.sum() * d)
