#!/bin/sh
# The `keygen` service of docker/compose.yaml: once, into the shared volume
# (KEYS_DIR, default /etc/influencers/keys), a fresh demo API key
# (api-key, mode 600) and the directory file both gateways read
# (directory.json: docker/directory.example.json with the key's SHA-256);
# then, and on every later `up`, it prints the key and a curl line.
# The key is never in the repository; `docker compose down -v` forgets it.
#
#   keygen.sh [TEMPLATE]    (default /etc/influencers/directory.example.json)

set -eu

KEYS_DIR=${KEYS_DIR:-/etc/influencers/keys}
TEMPLATE=${1:-/etc/influencers/directory.example.json}
PLACEHOLDER=0000000000000000000000000000000000000000000000000000000000000000
PROJECT_ID=7f3c9a2e-4b1d-4e8a-9c5f-2d6b8e0a1f43

mkdir -p "$KEYS_DIR"

if [ ! -s "$KEYS_DIR/directory.json" ] || [ ! -s "$KEYS_DIR/api-key" ]; then
    rnd=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    [ ${#rnd} = 32 ] || { echo "keygen: cannot read /dev/urandom" >&2; exit 1; }
    key="sk_demo_$rnd"
    digest=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
    grep -q "$PLACEHOLDER" "$TEMPLATE" \
        || { echo "keygen: $TEMPLATE lacks the placeholder digest" >&2; exit 1; }
    sed "s/$PLACEHOLDER/$digest/" "$TEMPLATE" > "$KEYS_DIR/directory.json.new"
    chmod 644 "$KEYS_DIR/directory.json.new"
    (umask 077; printf '%s\n' "$key" > "$KEYS_DIR/api-key")
    mv "$KEYS_DIR/directory.json.new" "$KEYS_DIR/directory.json"
    echo "keygen: new demo key written to $KEYS_DIR"
fi

key=$(cat "$KEYS_DIR/api-key")
cat <<EOF
keygen: demo API key: $key
keygen: (org_demo, project $PROJECT_ID; only its SHA-256 is in directory.json)

curl -i -X POST http://127.0.0.1:18081/v1/projects/$PROJECT_ID/influencers \\
  -H "Authorization: Bearer $key" \\
  -H "Content-Type: application/json" \\
  -H "Idempotency-Key: 8d2f1a3e-0b4c-4a11-9f7e-33c0a2c1bd55" \\
  -d '{"gender":"female","ageRange":"young_adult","prompt":"barista energy, soft morning light"}'

The same request to gateway-b (port 18082) replays the same 202
(Idempotent-Replayed: true) from Redis, with no second job at the backend.
EOF
