# Sourced by the benchmarks, once $dir, $key and $project are set: the
# fixtures every one of them writes the same way.

# the directory file: the one API key, of org_bench, and its project
bench_directory() {
    local digest
    digest=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
    cat > "$dir/directory.json" <<JSON
{"keys": [{"sha256": "$digest", "org": "org_bench",
           "scopes": ["influencers:write"]}],
 "projects": [{"id": "$project", "org": "org_bench",
               "targetGender": "female"}]}
JSON
}

# nginx's temporary paths, inside $dir
temps="client_body_temp_path $dir/b; proxy_temp_path $dir/p;
       fastcgi_temp_path $dir/f; uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;"

# $dir/be.conf: a one-worker backend on 127.0.0.1:$1 answering 202
bench_backend_conf() {
    cat > "$dir/be.conf" <<CONF
worker_processes 1; pid $dir/be.pid; error_log $dir/be.log warn;
events { worker_connections 1024; }
http { access_log off; $temps
  server { listen 127.0.0.1:$1; keepalive_requests 1000000;
    location / { return 202 '{"accepted":true}'; } } }
CONF
}
