#!/bin/sh
# Vendor OpenSeadragon (BSD-3-Clause) into the package: the viewer loads nothing from a CDN.
# Run once per upgrade; the result is committed (src/omniseg/viewer/static/openseadragon/).
set -e
VERSION=6.1.1
SHA256=b4ab2942f33b90e0448e4d20fc5ed14cee049f1f3ae49d70afd4b05e9a2f92d0
cd "$(dirname "$0")/.."
TMP=$(mktemp -d)
(cd "$TMP" && npm pack "openseadragon@$VERSION" >/dev/null)
echo "$SHA256  $TMP/openseadragon-$VERSION.tgz" | sha256sum -c -
tar xzf "$TMP/openseadragon-$VERSION.tgz" -C "$TMP"
DEST=src/omniseg/viewer/static/openseadragon
rm -rf "$DEST" && mkdir -p "$DEST/images"
cp "$TMP/package/build/openseadragon/openseadragon.min.js" "$DEST/"
cp "$TMP/package/build/openseadragon/images/"*.png "$DEST/images/"
cp "$TMP/package/LICENSE.txt" "$DEST/LICENSE.txt"
printf '{"package": "openseadragon", "version": "%s", "npm_tarball_sha256": "%s", "license": "BSD-3-Clause"}\n' \
  "$VERSION" "$SHA256" > "$DEST/VENDOR.json"
rm -rf "$TMP"
echo "vendored openseadragon $VERSION into $DEST"
