"""Independent check of what rebake attached to an image, in cosign's tag scheme.

Reads the registry over plain HTTP with urllib (not rebake's client), verifies the
simple-signing signature and every DSSE envelope with securesystemslib (PyPI) and the public
key, parses each statement, and the SLSA provenance and test-result predicates, strictly into
the in-toto attestation framework's own protobuf messages (PyPI's in-toto-attestation: an
unknown or mistyped field fails) and runs its validation, and writes each verified in-toto
statement to OUT/<n>.json.

usage: cosign_check.py REGISTRY_URL REPOSITORY_PATH DIGEST_HEX PUBLIC_KEY_PEM OUT_DIR
"""
import base64
import hashlib
import json
import os
import sys
import urllib.request

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import Signature, SSlibKey
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.predicates.test_result.v0 import test_result_pb2

PREDICATES = {
    "https://slsa.dev/provenance/v1": provenance_pb2.Provenance,
    "https://in-toto.io/attestation/test-result/v0.1": test_result_pb2.TestResult,
}


def validate(statement):
    """The in-toto framework's own checks; the message's fields, strictly."""
    pb = json_format.ParseDict(statement, statement_pb2.Statement())
    Statement.copy_from_pb(pb).validate()
    message = PREDICATES.get(statement["predicateType"])
    if message is None:
        return
    predicate = json_format.ParseDict(statement["predicate"], message())
    if statement["predicateType"].startswith("https://slsa.dev/"):
        assert predicate.build_definition.build_type, "buildType"
        assert predicate.run_details.builder.id, "builder.id"
        for dep in predicate.build_definition.resolved_dependencies:
            ResourceDescriptor.copy_from_pb(dep).validate()

base, repo, hexdigest, pub_path, out = sys.argv[1:6]
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def get(path, accept=None):
    req = urllib.request.Request(base + path)
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req) as r:
        return r.read()


def blob(digest):
    data = get(f"/v2/{repo}/blobs/{digest}")
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, digest
    return data


# cosign leaves the keyid of a key-based signature empty; securesystemslib matches keyids.
parsed = SSlibKey.from_crypto(load_pem_public_key(open(pub_path, "rb").read()))
key = SSlibKey("", parsed.keytype, parsed.scheme, parsed.keyval)

sig_manifest = json.loads(get(f"/v2/{repo}/manifests/sha256-{hexdigest}.sig", ACCEPT))
assert sig_manifest["mediaType"] == ACCEPT, sig_manifest
[layer] = sig_manifest["layers"]
assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json", layer
payload = blob(layer["digest"])
sig = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
key.verify_signature(Signature("", sig.hex()), payload)
critical = json.loads(payload)["critical"]
assert critical["type"] == "cosign container image signature", critical
assert critical["image"]["docker-manifest-digest"] == "sha256:" + hexdigest, critical
print("signature: verified for", critical["identity"]["docker-reference"])

att_manifest = json.loads(get(f"/v2/{repo}/manifests/sha256-{hexdigest}.att", ACCEPT))
os.makedirs(out, exist_ok=True)
for n, layer in enumerate(att_manifest["layers"]):
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json", layer
    envelope = Envelope.from_dict(json.loads(blob(layer["digest"])))
    assert envelope.payload_type == "application/vnd.in-toto+json"
    envelope.verify([key], 1)
    statement = json.loads(envelope.payload)
    assert statement["predicateType"] == layer["annotations"]["predicateType"], layer
    assert statement["subject"][0]["digest"]["sha256"] == hexdigest, statement["subject"]
    validate(statement)
    with open(os.path.join(out, f"{n}.json"), "w") as f:
        json.dump(statement, f)
    print("attestation: verified", statement["predicateType"])
