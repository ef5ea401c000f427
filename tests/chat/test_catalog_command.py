"""``manage.py catalog``: entries for remote servers added, changed, listed and removed from a
script; bad input is a non-zero exit with a message, and nothing half-written."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from chat.models import CatalogEntry

pytestmark = pytest.mark.django_db

NAME = "@cf/remote/big"


def catalog(*args: str) -> str:
    out = StringIO()
    call_command("catalog", *args, stdout=out)
    return out.getvalue()


def test_add_set_list_remove_a_remote_entry() -> None:
    out = catalog("add", NAME, "--source", "openai:http://10.0.0.5:8000/v1/", "--upstream-model", "llama-70b",
                  "--context-length", "8192", "--max-output-tokens", "2048", "--api-key-env", "VLLM_KEY")
    assert out.startswith(f"added {NAME} | openai:http://10.0.0.5:8000/v1 | upstream model llama-70b")
    entry = CatalogEntry.objects.get(name=NAME)
    spec = entry.to_spec()
    assert spec.is_remote and spec.source_ref == "http://10.0.0.5:8000/v1" and spec.api_key_env == "VLLM_KEY"
    assert "VLLM_KEY" not in entry.source and entry.api_key_env == "VLLM_KEY"  # the key itself is never stored

    out = catalog("set", NAME, "--add-upstream", "http://10.0.0.6:8000/v1", "--default")
    assert "+http://10.0.0.6:8000/v1" in out and out.rstrip().endswith("default")
    assert CatalogEntry.objects.get(name=NAME).to_spec().upstreams == ("http://10.0.0.6:8000/v1",)
    line = next(line for line in catalog("list").splitlines() if line.startswith(NAME))
    assert "openai:http://10.0.0.5:8000/v1, openai:http://10.0.0.6:8000/v1" in line and "[default]" in line

    catalog("set", NAME, "--remove-upstream", "http://10.0.0.5:8000/v1")  # the next URL becomes the first
    assert CatalogEntry.objects.get(name=NAME).source == "openai:http://10.0.0.6:8000/v1"
    assert catalog("remove", NAME) == f"removed {NAME}\n"
    assert not CatalogEntry.objects.filter(name=NAME).exists()


@pytest.mark.parametrize("args, message", [
    (("add", NAME, "--source", "ftp:x", "--context-length", "1", "--max-output-tokens", "1"), "expected one of"),
    (("add", NAME, "--source", "openai:localhost", "--context-length", "1", "--max-output-tokens", "1"),
     "is not an http"),
    (("add", NAME, "--source", "openai:http://h/v1", "--context-length", "1", "--max-output-tokens", "1",
      "--api-key-env", "not a name"), "not an environment variable name"),
    (("add", "@cf/huggingfacetb/smollm2-135m-instruct", "--source", "openai:http://h/v1", "--context-length", "1",
      "--max-output-tokens", "1"), "already in the catalog"),
    (("set", "@cf/nobody/nothing", "--context-length", "5"), "no catalog entry"),
    (("set", "@cf/huggingfacetb/smollm2-135m-instruct", "--add-upstream", "http://h/v1"), "for openai: sources"),
    (("remove", "@cf/nobody/nothing"), "no catalog entry"),
])
def test_bad_input_is_an_error_with_a_message_and_changes_nothing(args: tuple[str, ...], message: str) -> None:
    before = list(CatalogEntry.objects.order_by("name").values())
    with pytest.raises(CommandError, match=message):
        catalog(*args)
    assert list(CatalogEntry.objects.order_by("name").values()) == before


@pytest.mark.parametrize(("model_type", "served"), [("llama", "native: llama"), ("qwen3", "native: qwen3"),
                                                    ("gpt2", "transformers: gpt2")])
def test_a_local_entry_says_which_path_serves_it(tmp_path, model_type: str, served: str) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoConfig

    AutoConfig.for_model(model_type).save_pretrained(tmp_path)
    out = catalog("add", "@cf/local/x", "--source", f"path:{tmp_path}", "--context-length", "512",
                  "--max-output-tokens", "64")
    assert f"served by {served}" in out
    assert CatalogEntry.objects.get(name="@cf/local/x").serving == served


def test_a_local_entry_no_path_can_serve_is_refused_with_the_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoConfig

    AutoConfig.for_model("t5").save_pretrained(tmp_path)  # an encoder-decoder: not a text-generation decoder
    with pytest.raises(CommandError, match="architecture 't5'"):
        catalog("add", "@cf/local/t5", "--source", f"path:{tmp_path}", "--context-length", "512",
                "--max-output-tokens", "64")
    with pytest.raises(CommandError, match="weights not found|cannot be served"):
        catalog("add", "@cf/local/none", "--source", f"path:{tmp_path}/missing", "--context-length", "512",
                "--max-output-tokens", "64")
    assert not CatalogEntry.objects.filter(name__startswith="@cf/local/").exists()
