"""The runtime bundle asset (runtime/, its requirements, the boot script) and the user data that boots it."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

REPO = Path(__file__).resolve().parents[1]
BUNDLE_PATHS = (
    "runtime",
    "requirements/runtime.txt",
    "requirements/runtime.lock",
    "requirements/runtime-cuda.lock",
    "stacks/boot",
)
INSTALL_DIR = "/opt/captionkit"
BOOT_SCRIPT = f"{INSTALL_DIR}/src/stacks/boot/bootstrap.sh"


@jsii.implements(ILocalBundling)
class _CopyBundlePaths:
    """Copies only BUNDLE_PATHS, so the asset never walks .venv, node_modules or cdk.out."""

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        for relative in BUNDLE_PATHS:
            source, target = REPO / relative, Path(output_dir) / relative
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        return True


def runtime_bundle(scope: Construct, construct_id: str) -> s3_assets.Asset:
    """A zip asset of the runtime, hashed by content so an unchanged runtime keeps the launch template."""
    return s3_assets.Asset(
        scope,
        construct_id,
        path=str(REPO / "runtime"),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(image=DockerImage.from_registry("local-bundling-only"), local=_CopyBundlePaths()),
    )


def boot_user_data(
    bundle: s3_assets.Asset, *, agent_config_json: str, torch_index_url: str, region: str
) -> ec2.UserData:
    """User data that fetches the bundle, unpacks it and runs the boot script with the agent's config."""
    user_data = ec2.UserData.for_linux()
    user_data.add_commands("set -euo pipefail", f"mkdir -p {INSTALL_DIR}")
    zip_path = user_data.add_s3_download_command(
        bucket=bundle.bucket, bucket_key=bundle.s3_object_key, local_file=f"{INSTALL_DIR}/bundle.zip", region=region
    )
    user_data.add_commands(
        f"rm -rf {INSTALL_DIR}/src && python3 -m zipfile -e {zip_path} {INSTALL_DIR}/src",
        f"export CAPTIONKIT_AGENT_CONFIG={shlex.quote(agent_config_json)}",
        f"export CAPTIONKIT_TORCH_INDEX_URL={shlex.quote(torch_index_url)}",
        f"bash {BOOT_SCRIPT}",
    )
    return user_data
