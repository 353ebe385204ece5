"""The moto shim's multipart completion: the object, its ETag and its checksum are what moto made,
written part by part from the parts' files instead of concatenated in memory (moto: about four
times the object; a million items' 5.9 GiB export, ~24 GiB)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from relayflow.local import moto_shim

BUCKET = "shim-multipart"
PART = 8 * 1024 * 1024  # past moto's 5 MiB in memory: each part is a file, as an export's are
PARTS = 4


@pytest.fixture
def s3(fake_aws_env: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _upload(client: Any, key: str) -> tuple[str, list[dict[str, Any]]]:
    """A multipart upload of PARTS parts (the last one short), and its parts as completion names them."""
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = [
        {
            "PartNumber": n,
            "ETag": client.upload_part(
                Bucket=BUCKET,
                Key=key,
                UploadId=upload,
                PartNumber=n,
                Body=bytes([n]) * (PART if n < PARTS else PART // 3),
            )["ETag"],
        }
        for n in range(1, PARTS + 1)
    ]
    return upload, parts


def _complete(client: Any, key: str, uploaded: tuple[str, list[dict[str, Any]]]) -> float:
    """Complete the upload from its parts: tracemalloc's peak during it, in bytes."""
    upload, parts = uploaded
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        client.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )
        return float(tracemalloc.get_traced_memory()[1] - start)
    finally:
        tracemalloc.stop()


def _stored(client: Any, key: str) -> tuple[bytes, str, int, tuple[Any, Any, Any]]:
    """The object as a GET answers it, and the checksum moto keeps on it (a GET of an upload that
    named no algorithm answers none, so the checksum is read where moto keeps it)."""
    from moto.s3.models import s3_backends

    answer = client.get_object(Bucket=BUCKET, Key=key)
    kept = s3_backends["123456789012"]["aws"].buckets[BUCKET].keys[key]
    checksum = (kept.checksum_value, kept.checksum_type, kept.checksum_parts)
    return answer["Body"].read(), answer["ETag"], answer["ContentLength"], checksum


def test_a_completed_upload_is_what_moto_made_without_the_object_in_memory(s3: Any) -> None:
    size = (PARTS - 1) * PART + PART // 3
    # Given moto's own completion of an upload
    moto_peak = _complete(s3, "moto", _upload(s3, "moto"))
    made_by_moto = _stored(s3, "moto")
    assert made_by_moto[2] == size and moto_peak > 2 * size
    assert made_by_moto[3][0]  # moto keeps a checksum of the whole object
    moto_shim.install()
    try:
        # When the shim completes the same upload
        peak = _complete(s3, "shim", _upload(s3, "shim"))
        # Then the object, its ETag and its checksum are the same, and it never held the object
        assert _stored(s3, "shim") == made_by_moto
        assert peak < size / 2, (peak, size)
        assert s3.head_object(Bucket=BUCKET, Key="shim", PartNumber=2)["ContentLength"] == PART
        # and a wrong or missing part is refused as moto refuses it
        upload, _ = _upload(s3, "bad")
        with pytest.raises(s3.exceptions.ClientError, match="InvalidPart"):
            s3.complete_multipart_upload(
                Bucket=BUCKET,
                Key="bad",
                UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"0000"'}]},
            )
    finally:
        moto_shim.uninstall()
