"""Prompt tokenization: the CogACT prompt, EOS as the cognition token, right padding, local HF tokenizers."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mole_vla_ros.model.configuration import LLMConfig
from mole_vla_ros.model.tokenizer import ByteTokenizer, build_prompt, build_tokenizer


def test_prompt_is_the_cogact_prompt_with_lower_cased_instruction():
    assert (
        build_prompt("Pick up the RED cube") == "In: What action should the robot take to pick up the red cube?\nOut: "
    )
    with pytest.raises(ValueError, match="instruction must be a non-empty string"):
        build_prompt("")


def test_prompt_template_shortens_the_byte_sequence_and_is_validated():
    short = build_tokenizer(LLMConfig(prompt_template="{instruction}"))
    full = build_tokenizer(LLMConfig())
    assert bytes(short.encode("Pick up the red cube")[:-1]).decode() == "pick up the red cube"
    assert len(full.encode("pick up the red cube")) - len(short.encode("pick up the red cube")) == 48
    with pytest.raises(ValueError, match="prompt_template must contain"):
        LLMConfig(prompt_template="pick up something")


def test_byte_tokenizer_ends_rows_with_eos_and_right_pads():
    tok = ByteTokenizer()
    batch = tok.batch(["go", "pick up the cube"])
    assert batch.padded is True and batch.ids.shape[0] == 2
    lengths = batch.mask.sum(1).tolist()
    assert lengths[0] < lengths[1] == batch.ids.shape[1]
    for row, n in zip(batch.ids, lengths):
        assert int(row[n - 1]) == tok.eos_id and all(int(t) == tok.pad_id for t in row[n:])
    assert bytes(batch.ids[0, : lengths[0] - 1].tolist()).decode() == build_prompt("go")
    assert tok.batch(["a", "b"]).padded is False
    with pytest.raises(ValueError, match="non-empty list of strings"):
        tok.batch("pick up")


def test_llama_tokenizer_from_a_local_folder_appends_the_space_token_before_eos(tmp_path):
    # a miniature LLaMA-style (SentencePiece '▁' word boundaries) tokenizer written to disk; nothing is downloaded
    text = build_prompt("pick up the cube").replace(" ", "")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3}
    for c in sorted(set(text)):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault("▁" + c, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(str(tmp_path))
    cfg = LLMConfig(tokenizer="llama", path=str(tmp_path), vocab_size=len(vocab))
    tok = build_tokenizer(cfg)
    ids = tok.encode("Pick up the cube")
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert ids[-2:] == [3, 2]  # ... '▁' EOS, as CogACT's [29871, 2]
    assert 0 not in ids  # every prompt character is known
    # a checkpoint's saved copy is preferred over the original folder
    tok.save(str(tmp_path / "ckpt"))
    again = build_tokenizer(LLMConfig(tokenizer="llama", path="/nonexistent"), checkpoint_dir=str(tmp_path / "ckpt"))
    assert again.encode("Pick up the cube") == ids


def test_missing_llama_folder_is_explained():
    with pytest.raises(FileNotFoundError, match=r"llm\.path='/nonexistent' is not a directory"):
        build_tokenizer(LLMConfig(tokenizer="llama", path="/nonexistent"))
