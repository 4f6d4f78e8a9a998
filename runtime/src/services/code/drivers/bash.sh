# sandlot's Bash driver: one long-lived interactive bash per code context.
#
# bash runs as `bash --norc --noprofile --noediting -i` with the host's
# request pipe on fd 0, so bash itself reads the requests: the host first
# writes this file, then one request per cell whose header line is a
# command line (see protocol.rs, "bash dialect"):
#   __sandlot_cell <id> <env count> <code bytes>; eval "$__sandlot_run" ...
# `__sandlot_cell` reads the variables and the code that follow the line;
# the rest of the line then runs the code at the shell's top level (not in a
# function: `declare` and `local` behave as typed at a prompt). Messages go
# out on fd 4; the cell's stdout and stderr are fds 1 and 2.
#
# Why interactive: on SIGINT an interactive shell abandons the whole command
# line (loops and functions included) and goes back to reading the next one,
# keeping its variables, functions, cwd and options, as a terminal does.
# PROMPT_COMMAND then reports the end of the cell with its status.
PS1= PS2= PS4='+ '
set +H +m
exec {__sandlot_msg}>&4 4>&-
__sandlot_id=
__sandlot_count=0

__sandlot_send() {
	local LC_ALL=C
	printf '%d\n%s' "${#1}" "$1" >&"$__sandlot_msg"
}

# Reads one cell's variables and code; leaves in __sandlot_run the command
# that runs the code with the variables set for that command only.
__sandlot_cell() {
	local i kl vl k v assign= code=
	for ((i = 0; i < $2; i++)); do
		IFS=' ' read -r kl vl
		LC_ALL=C IFS= read -r -N "$kl" k
		LC_ALL=C IFS= read -r -N "$vl" v
		printf -v v '%q' "$v"
		assign+="$k=$v "
	done
	if (($3 > 0)); then
		LC_ALL=C IFS= read -r -N "$3" code
	fi
	__sandlot_code=$code
	__sandlot_run="$assign eval \"\$__sandlot_code\""
	__sandlot_id=$1
	((__sandlot_count++))
	__sandlot_send "{\"type\":\"start\",\"id\":$1,\"execution_count\":$__sandlot_count}"
}

__sandlot_done() {
	local status=$?
	if [[ -n $__sandlot_id ]]; then
		__sandlot_send "{\"type\":\"done\",\"id\":$__sandlot_id,\"status\":$status,\"execution_count\":$__sandlot_count}"
		__sandlot_id=
	fi
}
PROMPT_COMMAND=__sandlot_done
readonly PROMPT_COMMAND
readonly -f __sandlot_send __sandlot_cell __sandlot_done
__sandlot_send "{\"type\":\"ready\",\"protocol\":1,\"language\":\"bash\",\"version\":\"$BASH_VERSION\"}"
