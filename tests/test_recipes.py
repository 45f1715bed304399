"""The shipped recipes validate, and the pretraining recipe builds shards that verify."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsforge.recipe import load_recipe
from dsforge.runner import build

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_shipped_recipes_validate(recipe, shared_data):
    loaded = load_recipe(recipe)
    assert loaded.steps, f"{recipe.name} has no steps"


def test_pretrain_recipe_builds_verified_megatron_shards(shared_data, tmp_path):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "pretrain.yaml"
    result = build(recipe, output=str(tmp_path / "pretrain"), limit=40, workers=2)
    stats = result.stats
    assert stats["output"]["format"] == "megatron"
    assert stats["output"]["tokens"]["train"] == stats["steps"][-1]["tokens_out"] > 10_000
    names = {s["step"] for s in stats["steps"]}
    assert {"extract_html", "language", "gopher_quality", "c4_quality", "dedup_minhash", "tokenize"} <= names
    verify = subprocess.run(
        [sys.executable, "-m", "dsforge", "verify", str(tmp_path / "pretrain"),
         "--tokenizer", str(shared_data / "tokenizers" / "gpt2")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr


def test_sft_recipe_mixes_formats_and_trains_with_sft_trainer(shared_data, tmp_path):
    import shutil

    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "sft.yaml"
    result = build(recipe, output=str(tmp_path / "sft"), limit=150)
    stats = result.stats
    formats = {k for k in stats["steps"][0]["metrics"] if k.startswith("format_")}
    assert formats == {"format_alpaca", "format_sharegpt", "format_oasst", "format_self_instruct"}
    dropped = {reason for step in stats["steps"] for reason in step["dropped"]}
    assert {"placeholder", "duplicate"} <= dropped  # the identity file's {{name}} rows, repeated prompts
    data = datasets.load_dataset(str(result.output))
    assert set(data) == {"train", "test"}
    assert data["train"].column_names == [
        "messages",
        *[c for c in data["train"].column_names if c != "messages"],
    ]
    assert not {"prompt", "completion", "text", "chosen", "rejected", "label"} & set(
        data["train"].column_names
    )

    model_dir = tmp_path / "model"
    shutil.copytree(shared_data / "models" / "tiny-random-gpt2", model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # the template the recipe checked every conversation against (it renders tool turns)
    tokenizer.chat_template = (shared_data / "chat_templates" / "qwen2.5-instruct.jinja").read_text()
    tokenizer.pad_token = tokenizer.eos_token
    config = SFTConfig(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2, report_to=[],
        use_cpu=True, max_length=256, save_strategy="no", dataloader_num_workers=0,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=config,
        train_dataset=data["train"].select_columns(["messages"]),
        processing_class=tokenizer,
    )
    assert trainer.train().global_step == 2
