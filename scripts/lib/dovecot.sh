# shellcheck shell=bash
# A private Dovecot POP3 server on loopback, for scripts/demo and scripts/bench.
#
#   . scripts/lib/dovecot.sh
#   dovecot_start DIR [USER...]    # start one; sets the DV_* variables below
#   dovecot_maildir USER           # the server-side Maildir of a user
#   dovecot_stop [DIR]             # stop it (default: the one started last)
#
# Everything lives under DIR: the configuration, Dovecot's base_dir (sockets, master.pid),
# state_dir and log, a throw-away CA with a server certificate for 127.0.0.1 and localhost,
# a passwd-file with the users (password: DV_PASSWORD), and the users' Maildirs. The system's
# own Dovecot service, if any, is neither used nor disturbed.
#
# Plain POP3 with STLS listens on 127.0.0.1:DV_POP3_PORT and implicit TLS on
# 127.0.0.1:DV_POP3S_PORT (free ports, picked at start). Logging in without TLS is refused
# unless DV_PLAINTEXT_AUTH=yes is set before dovecot_start. DV_EXTRA_CONF, if set, is appended
# to the configuration. With DV_IMAP=yes it serves IMAP too (Debian package dovecot-imapd),
# plain with STARTTLS on 127.0.0.1:DV_IMAP_PORT; DV_IMAP_CAPABILITY, if set, replaces what it
# says it can do after login (imap_capability: to hide LITERAL+, MULTIAPPEND or UIDPLUS).
#
# Started as root, Dovecot runs the mail processes as the numeric uid/gid DV_MAIL_UID
# (default 5000), which needs no /etc/passwd entry, and the mail files belong to it; started
# as another user, everything runs as that user.
#
# After dovecot_start:
#   DV_DIR DV_CONF DV_LOG DV_CA_FILE DV_POP3_PORT DV_POP3S_PORT DV_PASSWORD DV_MAIL_UID
#   DV_MAIL_GID DV_USERS; DIR/env holds the same as shell assignments (for `. DIR/env`).
#
# The functions print problems to stderr and return non-zero; they work with or without
# `set -euo pipefail` in the caller.

DV_PASSWORD=${DV_PASSWORD:-secret}

# A TCP port on 127.0.0.1 that nothing listens on right now.
dovecot_free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Whether process PID is alive. A daemon whose parent is a pid 1 that never reaps (as in some
# containers) stays a zombie after it exits: a zombie counts as stopped.
dovecot_pid_alive() {
    local pid=$1 stat
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# The master pid of the Dovecot under DIR (default DV_DIR), if it is running.
dovecot_pid() {
    local dir=${1:-${DV_DIR:-}} pid
    [[ -n $dir && -s $dir/run/master.pid ]] || return 1
    pid=$(<"$dir/run/master.pid")
    dovecot_pid_alive "$pid" || return 1
    echo "$pid"
}

dovecot_maildir() {
    echo "${DV_DIR:?dovecot_start was not called}/mail/$1/Maildir"
}

# The last lines of the Dovecot log.
dovecot_log_tail() {
    local n=${1:-20}
    [[ -n ${DV_DIR:-} ]] || return 0
    tail -n "$n" "$DV_DIR/log/dovecot.log" "$DV_DIR/log/startup.log" >&2 2>/dev/null || true
}

# A CA and a server certificate for 127.0.0.1 and localhost, signed by it. EC keys: fast.
_dovecot_make_certificates() {
    local tls=$1
    mkdir -p "$tls" || return 1
    cat >"$tls/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
EOF
    (
        cd "$tls" &&
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -days 30 -subj "/O=popsync scripts/CN=popsync throw-away CA" \
                -config openssl.cnf -extensions ca -keyout ca.key -out ca.pem &&
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -subj "/CN=localhost" -config openssl.cnf -keyout server.key -out server.csr &&
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 30 \
                -extfile openssl.cnf -extensions server -out server.pem
    ) >"$tls/openssl.log" 2>&1 || {
        cat "$tls/openssl.log" >&2
        echo "dovecot.sh: cannot make the test certificates" >&2
        return 1
    }
    chmod 600 "$tls/ca.key" "$tls/server.key"
}

_dovecot_write_config() {
    local plain_port=$1 tls_port=$2 users_file=$3 owner_lines="" chroot=""
    if [[ $(id -u) != 0 ]]; then
        # Everything runs as the caller, and chroot() needs root: no chroots.
        owner_lines="default_internal_user = $(id -un)
default_internal_group = $(id -gn)
default_login_user = $(id -un)
service anvil {
  chroot =
}
service ipc {
  chroot =
}"
        chroot="chroot ="
    fi
    cat >"$DV_CONF" <<EOF
# A private Dovecot for popsync's scripts (scripts/lib/dovecot.sh). Not the system service.
instance_name = popsync-$plain_port
base_dir = $DV_DIR/run
state_dir = $DV_DIR/state
log_path = $DV_DIR/log/dovecot.log
info_log_path = $DV_DIR/log/dovecot.log
protocols = pop3$([[ ${DV_IMAP:-no} == yes ]] && echo " imap")
listen = 127.0.0.1
shutdown_clients = yes
$owner_lines

ssl = yes
ssl_cert = <$DV_DIR/tls/server.pem
ssl_key = <$DV_DIR/tls/server.key
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = $([[ ${DV_PLAINTEXT_AUTH:-no} == yes ]] && echo no || echo yes)
auth_mechanisms = plain login
auth_failure_delay = 0

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $users_file
}
userdb {
  driver = passwd-file
  args = username_format=%u $users_file
}

first_valid_uid = $DV_MAIL_UID
last_valid_uid = $DV_MAIL_UID
first_valid_gid = $DV_MAIL_GID
last_valid_gid = $DV_MAIL_GID
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100
# a 50 MB message needs more than the default 256M of address space
default_vsz_limit = 1G
pop3_uidl_format = %08Xu%08Xv

service pop3-login {
  $chroot
  inet_listener pop3 {
    address = 127.0.0.1
    port = $plain_port
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $tls_port
    ssl = yes
  }
}
$(_dovecot_imap_conf "$chroot")
${DV_EXTRA_CONF:-}
EOF
}

_dovecot_imap_conf() {
    [[ ${DV_IMAP:-no} == yes ]] || return 0
    cat <<EOF
service imap-login {
  $1
  inet_listener imap {
    address = 127.0.0.1
    port = $DV_IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
EOF
    [[ -z ${DV_IMAP_CAPABILITY:-} ]] || echo "imap_capability = $DV_IMAP_CAPABILITY"
}

_dovecot_wait_ready() {
    local i
    for ((i = 0; i < 300; i++)); do
        if dovecot_pid >/dev/null &&
            (: <>"/dev/tcp/127.0.0.1/$DV_POP3_PORT") 2>/dev/null &&
            (: <>"/dev/tcp/127.0.0.1/$DV_POP3S_PORT") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# dovecot_start DIR [USER...]: users default to user1 user2 user3 user4.
dovecot_start() {
    local dir=$1
    shift
    local users=("$@")
    ((${#users[@]})) || users=(user1 user2 user3 user4)
    if ! command -v dovecot >/dev/null; then
        echo "dovecot.sh: dovecot is not installed (apt-get install dovecot-core dovecot-pop3d)" >&2
        return 1
    fi
    if ! command -v openssl >/dev/null; then
        echo "dovecot.sh: openssl is not installed (apt-get install openssl)" >&2
        return 1
    fi
    mkdir -p "$dir" || return 1
    DV_DIR=$(cd "$dir" && pwd) || return 1
    # Unix sockets under base_dir must fit in sun_path (108 bytes).
    if ((${#DV_DIR} > 70)); then
        echo "dovecot.sh: $DV_DIR is too long a path for Dovecot's sockets; use a shorter one" >&2
        return 1
    fi
    if dovecot_pid "$DV_DIR" >/dev/null; then
        echo "dovecot.sh: a Dovecot is already running from $DV_DIR" >&2
        return 1
    fi
    DV_CONF=$DV_DIR/dovecot.conf
    DV_LOG=$DV_DIR/log/dovecot.log
    DV_CA_FILE=$DV_DIR/tls/ca.pem
    DV_USERS="${users[*]}"
    if [[ $(id -u) == 0 ]]; then
        DV_MAIL_UID=${DV_MAIL_UID:-5000}
        DV_MAIL_GID=${DV_MAIL_GID:-$DV_MAIL_UID}
    else
        DV_MAIL_UID=$(id -u)
        DV_MAIL_GID=$(id -g)
    fi
    mkdir -p "$DV_DIR"/{run,state,log,mail} || return 1
    # Dovecot's processes (other uids) must reach the passwd-file and the Maildirs.
    chmod 755 "$DV_DIR" "$DV_DIR/mail"
    [[ -s $DV_DIR/tls/server.pem ]] || _dovecot_make_certificates "$DV_DIR/tls" || return 1

    local users_file=$DV_DIR/users u
    : >"$users_file"
    for u in "${users[@]}"; do
        mkdir -p "$DV_DIR/mail/$u/Maildir"/{cur,new,tmp} || return 1
        chown -R "$DV_MAIL_UID:$DV_MAIL_GID" "$DV_DIR/mail/$u" || return 1
        echo "$u:{PLAIN}$DV_PASSWORD:$DV_MAIL_UID:$DV_MAIL_GID::$DV_DIR/mail/$u::" >>"$users_file"
    done
    chmod 644 "$users_file"

    local attempt
    for attempt in 1 2 3 4 5; do
        DV_POP3_PORT=$(dovecot_free_port) && DV_POP3S_PORT=$(dovecot_free_port) || return 1
        [[ $DV_POP3_PORT != "$DV_POP3S_PORT" ]] || continue
        DV_IMAP_PORT=0
        if [[ ${DV_IMAP:-no} == yes ]]; then
            DV_IMAP_PORT=$(dovecot_free_port) || return 1
            [[ $DV_IMAP_PORT != "$DV_POP3_PORT" && $DV_IMAP_PORT != "$DV_POP3S_PORT" ]] || continue
        fi
        _dovecot_write_config "$DV_POP3_PORT" "$DV_POP3S_PORT" "$users_file" || return 1
        # Not attached to the caller's pipes: a daemon holding them open makes `$(...)` and
        # `| tee` in the caller wait forever.
        if dovecot -c "$DV_CONF" </dev/null >"$DV_DIR/log/startup.log" 2>&1 && _dovecot_wait_ready; then
            cat >"$DV_DIR/env" <<EOF
DV_DIR='$DV_DIR'
DV_CONF='$DV_CONF'
DV_LOG='$DV_LOG'
DV_CA_FILE='$DV_CA_FILE'
DV_POP3_PORT=$DV_POP3_PORT
DV_POP3S_PORT=$DV_POP3S_PORT
DV_IMAP_PORT=$DV_IMAP_PORT
DV_PASSWORD='$DV_PASSWORD'
DV_MAIL_UID=$DV_MAIL_UID
DV_MAIL_GID=$DV_MAIL_GID
DV_USERS='$DV_USERS'
EOF
            return 0
        fi
        # Most likely a port was taken in the meantime: stop and try others.
        dovecot_stop "$DV_DIR" 2>/dev/null
        echo "dovecot.sh: start attempt $attempt failed, retrying" >&2
    done
    echo "dovecot.sh: Dovecot did not start; the end of its log:" >&2
    dovecot_log_tail 30
    return 1
}

# dovecot_stop [DIR]: stops the Dovecot under DIR (default DV_DIR), by its master pid.
dovecot_stop() {
    local dir=${1:-${DV_DIR:-}} pid i
    [[ -n $dir ]] || return 0
    pid=$(dovecot_pid "$dir") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        dovecot_pid_alive "$pid" || return 0
        sleep 0.05
    done
    echo "dovecot.sh: Dovecot (pid $pid) did not stop within 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
    ! dovecot_pid_alive "$pid"
}
