#!/bin/sh
# Install the Bridgehead agent on a fresh Linux machine, silently, and enrol it:
#
#   sudo sh install.sh --deb bridgehead-agent_0.1.0_amd64.deb --token-file token.txt \
#       --control-url https://control.example.net:8443 [--proxy http://proxy.example.net:3128] \
#       [--ca-file control-ca.pem] [--name NAME] [--cluster NAME]
#   sudo sh install.sh --binary ./bridgehead-agent ...     no package (a non-Debian machine)
#
# The token: --token TOKEN, --token - (read from standard input) or --token-file PATH; the last
# two keep it out of the process list. It reaches the agent on a pipe, never on a command line.
#
# Each step is skipped when it is already done, so a second run changes nothing and says so:
#   1. the package (dpkg -i, then apt-get -f install if dependencies are missing) or the binary
#   2. /etc/bridgehead-agent/agent.toml, unless it is configured already (anything but the
#      packaged sample or a file it wrote for an enrolment that failed): then it is left as it is
#   3. enrolment, as the user bridgehead (unless data_dir holds an identity already)
#   4. the service enabled and started when systemd runs (waiting for the agent to connect, at
#      most BRIDGEHEAD_START_TIMEOUT_S, 60 by default); otherwise how to start the agent
#
# Exit codes: 0 done or nothing to do; 2 bad arguments or not root; 3 enrolment failed;
# 4 the package or binary could not be installed; 5 the service did not start.
# Errors are one line on standard error. docs/packaging.md, "The .deb and install.sh".
set -eu

AGENT_USER=bridgehead
BINARY=/usr/bin/bridgehead-agent
CONFIG_DIR=/etc/bridgehead-agent
CONFIG=$CONFIG_DIR/agent.toml
DATA_DIR=/var/lib/bridgehead-agent
UNIT=bridgehead-agent.service
START_TIMEOUT_S=${BRIDGEHEAD_START_TIMEOUT_S:-60}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
USAGE="usage: install.sh --token TOKEN|--token-file PATH --control-url URL [--proxy URL] [--ca-file PATH] [--name NAME] [--cluster NAME] [--deb PATH | --binary PATH]"

say() { echo "install.sh: $*"; }
die() {
    code=$1
    shift
    echo "install.sh: error: $*" >&2
    exit "$code"
}

token="" token_file="" token_given="" control_url="" proxy="" ca_file="" name="" cluster=default deb="" binary=""
need_value() { [ "$2" -ge 2 ] || die 2 "$1 needs a value ($USAGE)"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --token) need_value "$1" $#; token=$2; token_given=1; shift 2 ;;
        --token-file) need_value "$1" $#; token_file=$2; shift 2 ;;
        --control-url) need_value "$1" $#; control_url=$2; shift 2 ;;
        --proxy) need_value "$1" $#; proxy=$2; shift 2 ;;
        --ca-file) need_value "$1" $#; ca_file=$2; shift 2 ;;
        --name) need_value "$1" $#; name=$2; shift 2 ;;
        --cluster) need_value "$1" $#; cluster=$2; shift 2 ;;
        --deb) need_value "$1" $#; deb=$2; shift 2 ;;
        --binary) need_value "$1" $#; binary=$2; shift 2 ;;
        -h | --help) echo "$USAGE"; exit 0 ;;
        *) die 2 "unknown argument '$1' ($USAGE)" ;;
    esac
done

# --- arguments, all checked before anything changes ----------------------------------------
[ "$(id -u)" -eq 0 ] || die 2 "run as root (it installs a package, a user and a service)"
[ -n "$control_url" ] || die 2 "--control-url is required ($USAGE)"
case "$control_url" in
    https://?* | http://?* | wss://?* | ws://?*) ;;
    *) die 2 "--control-url $control_url: give the control plane's https:// URL" ;;
esac
case "$proxy" in "" | http://?*) ;; *) die 2 "--proxy $proxy: give an HTTP CONNECT proxy as http://HOST:PORT" ;; esac
[ -z "$deb" ] || [ -z "$binary" ] || die 2 "give --deb or --binary, not both"
[ -z "$deb" ] || [ -f "$deb" ] || die 2 "--deb $deb: no such file"
[ -z "$binary" ] || { [ -f "$binary" ] && [ -x "$binary" ]; } || die 2 "--binary $binary: no such executable"
[ -z "$ca_file" ] || [ -r "$ca_file" ] || die 2 "--ca-file $ca_file: cannot read it"
if [ -z "$name" ]; then
    # The host's short name, in the characters an agent name allows.
    name=$(uname -n | cut -d. -f1 | tr -c 'A-Za-z0-9_.\n-' '-')
fi
valid_name() { printf '%s' "$1" | grep -Eq '^[A-Za-z0-9_.-]{1,128}$'; }
valid_name "$name" || die 2 "--name '$name': 1-128 characters of A-Z a-z 0-9 _ . -"
valid_name "$cluster" || die 2 "--cluster '$cluster': 1-128 characters of A-Z a-z 0-9 _ . -"
[ -z "$token_given" ] || [ -z "$token_file" ] || die 2 "give --token or --token-file, not both"
if [ -n "$token_file" ]; then
    [ -r "$token_file" ] || die 2 "--token-file $token_file: cannot read it"
    IFS= read -r token <"$token_file" || [ -n "$token" ] || die 2 "--token-file $token_file is empty"
elif [ "$token" = - ]; then
    # Empty is an error only if enrolment is needed (a second run has nothing to enrol).
    IFS= read -r token || true
fi
token=$(printf '%s' "$token" | tr -d ' \t\r')
if [ -n "$token" ]; then
    # bhe_<secret>.<sha256 of the control plane's certificate>; the pin alone is examined here.
    pin=${token##*.}
    case "$token" in bhe_?*.*) ;; *) pin="" ;; esac
    printf '%s' "$pin" | grep -Eq '^[0-9a-f]{64}$' \
        || die 2 "the token is not an enrolment token ('bhe_<secret>.<sha256>', from 'bridgehead-control enrollment-token create')"
    if [ -n "$ca_file" ]; then
        # The pin is the SHA-256 of the control plane's certificate (DER, the PEM's base64):
        # refuse before anything changes if it is not the certificate the admin was given.
        ca_sum=$(sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$ca_file" \
            | sed '1d;/-----END CERTIFICATE-----/,$d' | base64 -d 2>/dev/null | sha256sum | cut -d' ' -f1)
        [ "$ca_sum" = "$pin" ] \
            || die 3 "the token pins the control plane certificate sha256 $(echo "$pin" | cut -c1-16)..., but --ca-file $ca_file is $(echo "$ca_sum" | cut -c1-16)...: a token from another control plane?"
    fi
fi

changed=0
run_quiet() {
    # A command's output only if it fails: the install stays silent when all goes well.
    log=$(mktemp)
    if "$@" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    tail -n 5 "$log" | sed 's/^/    /' >&2
    rm -f "$log"
    return 1
}
as_agent() {
    # As the service runs it: the agent's user and group, a clean environment.
    setpriv --reuid="$AGENT_USER" --regid="$AGENT_USER" --init-groups \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$DATA_DIR" LANG=C.UTF-8 "$@"
}

# --- 1. the package, or the binary ----------------------------------------------------------
installed_version() { dpkg-query -W -f='${Status}|${Version}' bridgehead-agent 2>/dev/null | sed -n 's/^install ok installed|//p'; }
if [ -n "$deb" ]; then
    command -v dpkg >/dev/null || die 4 "--deb needs dpkg (a Debian-based system); use --binary elsewhere"
    package=$(dpkg-deb -f "$deb" Package 2>/dev/null) || die 4 "--deb $deb is not a Debian package"
    [ "$package" = bridgehead-agent ] || die 4 "--deb $deb is the package '$package', not bridgehead-agent"
    version=$(dpkg-deb -f "$deb" Version)
    if [ "$(installed_version || true)" = "$version" ]; then
        say "bridgehead-agent $version is installed already"
    else
        say "installing bridgehead-agent $version"
        # The admin's edits to the config are kept (confold), without a question.
        export DEBIAN_FRONTEND=noninteractive
        if ! run_quiet dpkg --force-confdef --force-confold -i "$deb"; then
            # Missing dependencies (a fresh machine may not have apt's lists yet); apt waits for
            # a lock held by, say, unattended-upgrades rather than failing at once.
            say "installing its missing dependencies with apt-get"
            run_quiet apt-get update -q -o DPkg::Lock::Timeout=300 || true
            run_quiet apt-get -f install -y -q -o DPkg::Lock::Timeout=300 \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                || die 4 "dpkg -i $deb failed and apt-get -f install could not repair it (output above)"
        fi
        [ "$(installed_version || true)" = "$version" ] || die 4 "bridgehead-agent $version is not installed after dpkg -i $deb"
        changed=1
    fi
elif [ -n "$binary" ]; then
    if [ -n "$(installed_version || true)" ]; then
        die 4 "bridgehead-agent is installed as a package: upgrade it with --deb, not --binary"
    fi
    if cmp -s "$binary" "$BINARY"; then
        say "$BINARY is this binary already"
    else
        say "installing $BINARY"
        { install -m 0755 -o root -g root "$binary" "$BINARY.new" && mv -f "$BINARY.new" "$BINARY"; } \
            || die 4 "cannot install $BINARY"
        changed=1
    fi
    # What the package's postinst does: the user, with no login shell, and its data directory.
    if ! getent passwd "$AGENT_USER" >/dev/null; then
        nologin=$(command -v nologin || echo /usr/sbin/nologin)
        useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell "$nologin" "$AGENT_USER" \
            || die 4 "cannot create the user $AGENT_USER"
        changed=1
    fi
    if [ ! -d "$DATA_DIR" ]; then
        install -d -m 0700 -o "$AGENT_USER" -g "$AGENT_USER" "$DATA_DIR"
        changed=1
    fi
elif [ ! -x "$BINARY" ]; then
    die 2 "$BINARY is not installed: give --deb PATH (Debian, Ubuntu) or --binary PATH"
fi
version=$("$BINARY" --version 2>/dev/null | sed -n 's/^bridgehead-agent //p')
[ -n "$version" ] || die 4 "$BINARY does not run (try: $BINARY --version)"
getent passwd "$AGENT_USER" >/dev/null || die 4 "the user $AGENT_USER is missing (reinstall the package)"

# --- 2. the configuration -------------------------------------------------------------------
# The packaged sample is not a configuration: it is replaced. Nor is a file this script wrote
# for an enrolment that then failed (a wrong URL, say): the next run writes it again. Anything
# else is the admin's.
MARKER="# Written by install.sh."
packaged_sum=$(dpkg-query -W -f='${Conffiles}' bridgehead-agent 2>/dev/null | awk -v f="$CONFIG" '$1 == f { print $2 }' || true)
configured=0
if [ -f "$CONFIG" ]; then
    configured=1
    if [ -n "$packaged_sum" ] && [ "$(md5sum <"$CONFIG" | cut -d' ' -f1)" = "$packaged_sum" ]; then
        configured=0
    elif [ "$(head -n1 "$CONFIG")" = "$MARKER" ] && [ ! -f "$DATA_DIR/identity.json" ]; then
        configured=0
    fi
fi
toml_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
if [ "$configured" = 1 ]; then
    say "$CONFIG is configured already: left as it is (remove it to write a new one)"
    grep -qF "$(toml_string "$control_url")" "$CONFIG" \
        || echo "install.sh: warning: $CONFIG does not name --control-url $control_url; it was not changed" >&2
else
    say "writing $CONFIG (agent $name, cluster $cluster)"
    install -d -m 0755 "$CONFIG_DIR"
    new=$(mktemp "$CONFIG_DIR/.agent.toml.XXXXXX")
    {
        echo "$MARKER"
        echo "# Every key, with its default: /usr/share/doc/bridgehead-agent/config.sample.toml"
        echo "# (config.sample.toml in the source)."
        echo "# Check a change before restarting: bridgehead-agent check --config $CONFIG"
        echo
        echo "[agent]"
        echo "name = $(toml_string "$name")"
        echo "cluster = $(toml_string "$cluster")"
        echo "data_dir = $(toml_string "$DATA_DIR")"
        echo
        echo "[control]"
        echo "url = $(toml_string "$control_url")"
        [ -z "$proxy" ] || echo "proxy = $(toml_string "$proxy")"
    } >"$new"
    chown "root:$AGENT_USER" "$new"
    chmod 0640 "$new"
    # The agent's own check, before the file takes the config's place.
    if ! problem=$("$BINARY" check --config "$new" 2>&1 >/dev/null); then
        rm -f "$new"
        die 2 "$(printf '%s' "$problem" | tail -n1 | sed "s#$new#$CONFIG#g")"
    fi
    mv -f "$new" "$CONFIG"
    changed=1
fi

# --- 3. enrolment ---------------------------------------------------------------------------
if [ -f "$DATA_DIR/identity.json" ]; then
    say "enrolled already (identity in $DATA_DIR)"
else
    [ -n "$token" ] || die 2 "--token or --token-file is required to enrol this agent"
    say "enrolling as $AGENT_USER with $control_url"
    if ! problem=$(printf '%s\n' "$token" | as_agent "$BINARY" enroll --config "$CONFIG" --token - 2>&1 >/dev/null); then
        die 3 "enrolment failed: $(printf '%s' "$problem" | tail -n1)"
    fi
    changed=1
fi

# --- 4. the service -------------------------------------------------------------------------
unit_known() { [ -f "/lib/systemd/system/$UNIT" ] || [ -f "/usr/lib/systemd/system/$UNIT" ] || [ -f "/etc/systemd/system/$UNIT" ]; }
if [ -n "$binary" ] && ! unit_known; then
    # No package, no unit yet: the agent writes its own (started below, as in the package's case).
    run_quiet "$BINARY" service install --user "$AGENT_USER" --config "$CONFIG" --no-start \
        || die 5 "$BINARY service install failed (output above)"
    changed=1
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if ! systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
        systemctl enable --quiet "$UNIT" || die 5 "systemctl enable $UNIT failed"
        changed=1
    fi
    verb=""
    if ! systemctl is-active --quiet "$UNIT"; then
        verb=start
    elif [ "$changed" = 1 ]; then
        verb=restart
    fi
    if [ -n "$verb" ]; then
        # Type=notify: the job ends once the agent says READY (connected). Waited for with a
        # bound of our own rather than the unit's TimeoutStartSec (minutes); on timeout, the
        # start goes on in systemd's hands.
        say "${verb}ing $UNIT"
        code=0
        timeout "$START_TIMEOUT_S" systemctl "$verb" "$UNIT" || code=$?
        [ "$code" != 124 ] \
            || die 5 "$UNIT has not connected to $control_url within ${START_TIMEOUT_S} s (still starting): see journalctl -u $UNIT"
        [ "$code" = 0 ] || die 5 "$UNIT did not $verb: see journalctl -u $UNIT"
        changed=1
    fi
else
    say "systemd is not running here, so the service was not started; start the agent as its unit does:"
    say "  setpriv --reuid=$AGENT_USER --regid=$AGENT_USER --init-groups $BINARY run --config $CONFIG"
fi

if [ "$changed" = 1 ]; then
    say "done: bridgehead-agent $version, agent $name in cluster $cluster"
else
    say "nothing to do: bridgehead-agent $version is installed, configured and enrolled; nothing was changed"
fi
