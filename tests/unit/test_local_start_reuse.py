"""What a local stack start no longer redoes, and what it still keeps apart: a template text is
parsed once (each caller gets its own copy), botocore sessions share one loader of service models
while a stack runs, and moto's symmetric KMS keys share one RSA key (asymmetric keys keep their own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.kms.models import kms_backends

from relayflow.local import cfn, moto_shim
from relayflow.local.provision import share_service_models

TEMPLATE = """\
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "${AWS::StackName}-data"
"""


def test_a_loaded_template_is_the_callers_own_copy(tmp_path: Path) -> None:
    # Given a template loaded once
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE, encoding="utf-8")
    first = cfn.load_template(path)
    # When a caller changes what it got
    first["Resources"]["Bucket"]["Properties"]["BucketName"] = "changed"
    first["Resources"]["Extra"] = {"Type": "AWS::SQS::Queue"}
    # Then the next load of the same text answers the file's content, not the change
    second = cfn.load_template(path)
    assert second == {
        "Resources": {
            "Bucket": {
                "Type": "AWS::S3::Bucket",
                "Properties": {"BucketName": {"Fn::Sub": "${AWS::StackName}-data"}},
            }
        }
    }
    assert second is not first


def test_a_template_changed_on_disk_is_read_again(tmp_path: Path) -> None:
    # Given a template loaded once, then rewritten
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE, encoding="utf-8")
    assert cfn.load_template(path)["Resources"]["Bucket"]["Type"] == "AWS::S3::Bucket"
    rewritten = TEMPLATE.replace("S3::Bucket", "SQS::Queue").replace("Bucket:", "Queue1:")
    path.write_text(rewritten, encoding="utf-8")
    # When it is loaded again
    template = cfn.load_template(path)
    # Then the new text is what it answers
    assert template["Resources"]["Queue1"]["Type"] == "AWS::SQS::Queue"
    assert "Bucket" not in template["Resources"]


def test_sessions_share_service_models_only_while_shared() -> None:
    try:
        # Given models shared
        share_service_models(True)
        # When two sessions are made
        one, two = boto3.session.Session(), boto3.session.Session()
        loader = one._session.get_component("data_loader")
        # Then they read models through one loader, whose search paths stay one of each
        assert two._session.get_component("data_loader") is loader
        assert len(loader.search_paths) == len(set(loader.search_paths))
        # and each still has its own credentials and settings
        assert one._session is not two._session
    finally:
        share_service_models(False)
    # Once no longer shared, a session has a loader of its own again
    three = boto3.session.Session()
    assert three._session.get_component("data_loader") is not loader


@pytest.fixture
def kms(fake_aws_env: None) -> Iterator[Any]:
    with mock_aws():
        moto_shim.install()
        try:
            yield boto3.client("kms", region_name="us-east-1")
        finally:
            moto_shim.uninstall()


def _private_key(key_id: str) -> Any:
    return kms_backends["123456789012"]["us-east-1"].keys[key_id].private_key


def test_symmetric_kms_keys_share_an_rsa_key_and_asymmetric_keys_do_not(kms: Any) -> None:
    # Given two symmetric keys (as every table's default SSE key is) and two asymmetric keys
    symmetric = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2)]
    asymmetric = [
        kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"] for _ in range(2)
    ]
    # Then the symmetric keys hold one RSA key, the asymmetric ones a key each
    assert _private_key(symmetric[0]) is _private_key(symmetric[1])
    assert _private_key(asymmetric[0]) is not _private_key(asymmetric[1])
    assert _private_key(asymmetric[0]) is not _private_key(symmetric[0])
    # and an asymmetric key's signature is verified by its own key only
    signature = kms.sign(
        KeyId=asymmetric[0], Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256", MessageType="RAW"
    )["Signature"]
    for key_id, valid in ((asymmetric[0], True), (asymmetric[1], False)):
        answer = kms.verify(
            KeyId=key_id,
            Message=b"m",
            Signature=signature,
            SigningAlgorithm="RSASSA_PSS_SHA_256",
            MessageType="RAW",
        )
        assert answer["SignatureValid"] is valid
