#!/usr/bin/env python3
"""Writes a one-layer OCI image archive (an OCI image layout in a tar), without Docker.

    oci-image.py --name recur.test/pause:1 --entrypoint /pause --user 65535:65535 \
        --out pause.tar pause-binary:/pause

Each SRC:DEST puts file SRC at DEST in the layer (mode 0755 for executables, else 0644, owner
0:0, mtime 0; parent directories 0755), entries sorted, so the same inputs always give the same
image digest. --cmd and --label add the image config's Cmd and Labels (scripts/images.sh builds
recur's image, the Dockerfile's layout, with them). The archive is what
`ctr -n k8s.io images import` reads: the index carries the image name in the annotation
io.containerd.image.name (and the tag in org.opencontainers.image.ref.name).
"""
import argparse
import hashlib
import io
import json
import os
import tarfile


def deterministic_tar(entries):
    """entries: list of (name, bytes, mode). Returns the bytes of an uncompressed tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for name, _, _ in entries:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data, mode in sorted(entries):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def blob(blobs, media_type, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True, help="image reference, e.g. recur.test/hello:1")
    ap.add_argument("--entrypoint", required=True, help="path of the program in the image")
    ap.add_argument("--cmd", action="append", default=[],
                    help="an argument of the default Cmd, after the entrypoint (repeatable)")
    ap.add_argument("--user", default="65532:65532", help="uid:gid the container runs as")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE (repeatable)")
    ap.add_argument("--expose", action="append", default=[], help="port, e.g. 8080 (repeatable)")
    ap.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeatable)")
    ap.add_argument("--out", required=True, help="the OCI archive to write")
    ap.add_argument("files", nargs="+", help="SRC:DEST, DEST an absolute path in the image")
    args = ap.parse_args()

    labels = {}
    for spec in args.label:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            ap.error(f"--label {spec}: expected KEY=VALUE")
        labels[key] = value

    entries = []
    for spec in args.files:
        src, sep, dest = spec.partition(":")
        if not sep or not dest.startswith("/"):
            ap.error(f"{spec}: expected SRC:/absolute/dest")
        with open(src, "rb") as f:
            data = f.read()
        mode = 0o755 if os.access(src, os.X_OK) else 0o644
        entries.append((dest.lstrip("/"), data, mode))
    dests = [name for name, _, _ in entries]
    if len(set(dests)) != len(dests):
        ap.error("the same DEST is given twice")
    layer = deterministic_tar(entries)

    blobs = {}
    layer_desc = blob(blobs, "application/vnd.oci.image.layer.v1.tar", layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": [args.entrypoint],
            **({"Cmd": args.cmd} if args.cmd else {}),
            "User": args.user,
            "Env": ["PATH=/"] + args.env,
            "WorkingDir": "/",
            **({"ExposedPorts": {f"{p}/tcp": {} for p in args.expose}} if args.expose else {}),
            **({"Labels": labels} if labels else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        "history": [{"created_by": "tests/cluster/images/oci-image.py", "created": "1970-01-01T00:00:00Z"}],
        "created": "1970-01-01T00:00:00Z",
    }
    config_desc = blob(blobs, "application/vnd.oci.image.config.v1+json",
                       json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(blobs, "application/vnd.oci.image.manifest.v1+json",
                         json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
    manifest_desc["annotations"] = {
        "io.containerd.image.name": args.name,
        "org.opencontainers.image.ref.name": tag,
    }
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [manifest_desc]}

    files = [("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), 0o644),
             ("index.json", json.dumps(index, sort_keys=True, separators=(",", ":")).encode(), 0o644)]
    for digest, data in blobs.items():
        files.append(("blobs/sha256/" + digest.split(":", 1)[1], data, 0o644))
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(deterministic_tar(files))
    os.replace(tmp, args.out)
    print(manifest_desc["digest"])


if __name__ == "__main__":
    main()
