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
