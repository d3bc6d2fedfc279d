"""The Makefile passes every path, URI and id whole: `make -n` printed commands, split as the shell splits them."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PREFIX = "s3://bucket/incoming/set a/"  # a space, as in real buckets
QUOTED = "s3://bucket/it's here/"  # a single quote, which the quoting itself uses

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def command(target: str, module: str, **variables: str) -> list[str]:
    """The arguments after `-m <module>` in the recipe `make -n` prints for target with these variables."""
    printed = subprocess.run(
        ["make", "-n", "-s", target, *(f"{k}={v}" for k, v in variables.items())],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")
    for line in printed.splitlines():
        words = shlex.split(line)
        if f"-m {module}" in " ".join(words):
            return words[words.index(module.split()[0]) + len(module.split()) :]
    raise AssertionError(f"no `-m {module}` line in make -n {target}:\n{printed}")


def test_collect_passes_a_prefix_with_a_space_and_the_out_path_whole():
    assert command("collect", "tools.collect", PREFIX=PREFIX, OUT="my captions.jsonl", FORMAT="jsonl") == [
        PREFIX,
        "my captions.jsonl",
        "--format",
        "jsonl",
    ]


def test_collect_by_job_passes_no_empty_prefix_and_defaults_out():
    assert command("collect", "tools.collect", JOB="job 7") == ["--job", "job 7", "captions.jsonl"]


@pytest.mark.parametrize("prefix", [PREFIX, QUOTED])
def test_submit_passes_the_prefix_and_job_id_whole(prefix):
    assert command("submit", "tools.submit", PREFIX=prefix, JOB_ID="batch 1") == [prefix, "--job-id", "batch 1"]
    assert command("submit", "tools.submit", PREFIX=prefix, WAIT="1") == ["--wait", prefix]


@pytest.mark.parametrize("uri", [PREFIX, QUOTED])
def test_submit_passes_shards_and_their_columns_whole(uri):
    assert command("submit", "tools.submit", SHARDS=uri, IMAGE_COLUMN="jpg bytes", KEY_COLUMN="it's id") == [
        "--shards",
        uri,
        "--image-column",
        "jpg bytes",
        "--key-column",
        "it's id",
    ]


def test_submit_passes_a_manifest_its_key_column_job_id_and_config_whole():
    assert command(
        "submit",
        "tools.submit",
        MANIFEST="s3://b/lists/keys a.csv",
        KEY_COLUMN="key",
        JOB_ID="j 1",
        CONFIG="conf/agent a.json",
        WAIT="1",
    ) == [
        "--wait",
        "--manifest",
        "s3://b/lists/keys a.csv",
        "--key-column",
        "key",
        "--job-id",
        "j 1",
        "--config",
        "conf/agent a.json",
    ]


def test_retry_sends_the_job_id_and_which_shards_whole():
    assert command("retry", "tools.submit", JOB="job 7") == ["--retry", "job 7"]
    assert command("retry", "tools.submit", JOB="it's 7", ONLY="errors", WAIT="1") == [
        "--wait",
        "--retry",
        "it's 7",
        "--only",
        "errors",
    ]


def test_collect_list_passes_the_job_and_no_out_path():
    assert command("collect", "tools.collect", JOB="job 7", LIST="1") == ["--job", "job 7", "--list"]
    assert command("collect", "tools.collect", JOB="job 7", OUT="my captions.parquet") == [
        "--job",
        "job 7",
        "my captions.parquet",
    ]


def test_export_passes_the_model_folder_out_path_and_task_whole():
    assert command("export", "export", MODEL="my models/blip", OUT="dist/a b.pt2", TASK="<OCR>") == [
        "--model",
        "my models/blip",
        "--out",
        "dist/a b.pt2",
        "--task",
        "<OCR>",
    ]


def test_export_passes_a_qwen_prompt_with_quotes_and_the_image_size_whole():
    prompt = "Describe it in 'one' sentence."
    assert command("export", "export", MODEL="Qwen/Qwen3-VL-2B-Instruct", PROMPT=prompt, IMAGE_SIZE="448x336") == [
        "--model",
        "Qwen/Qwen3-VL-2B-Instruct",
        "--out",
        "dist/model.pt2",
        "--prompt",
        prompt,
        "--image-size",
        "448x336",
    ]


def test_caption_passes_the_artifact_whole_and_images_as_shell_words():
    args = command("caption", "runtime caption", ARTIFACT="dist/set a.pt2", IMAGES="a.jpg 'set a/b.png'")
    assert args == ["--artifact", "dist/set a.pt2", "a.jpg", "set a/b.png"]


def test_upload_passes_the_artifact_whole():
    assert command("upload", "tools.models upload", ARTIFACT="dist/it's a.pt2") == ["dist/it's a.pt2"]


def test_agent_passes_the_config_path_whole_and_args_as_words():
    assert command("agent", "runtime agent", CONFIG="conf/agent a.json", ARGS="--burst") == [
        "--config",
        "conf/agent a.json",
        "--burst",
    ]


def test_status_and_redrive_pass_their_values_whole():
    assert command("status", "tools.status", JOB="job 7") == ["--job", "job 7"]
    assert command("redrive", "tools.redrive", MAX="5") == ["--max", "5"]


def test_gallery_passes_the_rows_file_job_and_out_whole_and_defaults_out():
    assert command("gallery", "tools.gallery", CAPTIONS="my run.jsonl", N="50", SEED="3") == [
        "my run.jsonl",
        "--out",
        "gallery.html",
        "--sample",
        "50",
        "--seed",
        "3",
    ]
    assert command("gallery", "tools.gallery", JOB="job 7", OUT="it's.html") == ["--job", "job 7", "--out", "it's.html"]
    assert command("gallery", "tools.gallery", PREFIX=PREFIX) == ["--prefix", PREFIX, "--out", "gallery.html"]


def test_compare_passes_artifacts_and_images_as_shell_words():
    assert command("compare", "tools.compare", ARTIFACTS="a.pt2 'b c.pt2'", IMAGES="photos 'my x.jpg'") == [
        "a.pt2",
        "b c.pt2",
        "--images",
        "photos",
        "my x.jpg",
        "--out",
        "compare.html",
    ]


def test_local_up_passes_settings_and_cdk_args_as_context_overrides():
    assert command(
        "local-up",
        "tools.local",
        SETTINGS="dataset_sources=s3://shards/laion/,s3://pq/ batch_size=4",
        CDK_ARGS="-c spot=true",
    ) == ["up", "-c", "dataset_sources=s3://shards/laion/,s3://pq/", "-c", "batch_size=4", "-c", "spot=true"]


def test_caption_and_collect_recipes_echo_nothing_on_stdout():
    recipes = (REPO / "Makefile").read_text().split("\n\n")
    for target in ("caption", "collect", "gallery", "compare"):
        [recipe] = [r for r in recipes if r.startswith(f"{target}: ")]
        assert recipe.splitlines()[1].startswith("\t@"), recipe
