# bash completion for vmlua: commands, options, files and instance names.

# The names of the instances: the directories under the runtime directory
# (running VMs) and the state directory (detached instances), as vmlua ls
# finds them (lua/vmlua/runtime.lua, lua/vmlua/instance/store.lua).
_vmlua_instances() {
  local run state dir
  if [ -n "${VMLUA_RUNTIME_DIR:-}" ]; then run=$VMLUA_RUNTIME_DIR
  elif [ -n "${XDG_RUNTIME_DIR:-}" ]; then run=$XDG_RUNTIME_DIR/vmlua
  else run=/tmp/vmlua-$(id -u); fi
  state=${XDG_STATE_HOME:-$HOME/.local/state}/vmlua
  for dir in "$run"/*/ "$state"/*/; do
    [ -d "$dir" ] || continue
    dir=${dir%/}
    printf '%s\n' "${dir##*/}"
  done | sort -u
}

_vmlua() {
  local cur prev cmd i
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  cmd=
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      -q) ;;
      -*) break ;;
      *) cmd=${COMP_WORDS[i]}; break ;;
    esac
  done
  case $cmd in
    plan)
      if [ "$prev" = --allow ]; then COMPREPLY=($(compgen -d -- "$cur")); return; fi
      if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W '--json --sandbox --allow --help' -- "$cur"))
      else COMPREPLY=($(compgen -f -X '!*.lua' -- "$cur") $(compgen -d -- "$cur")); fi
      return ;;
    ls|recipes)
      COMPREPLY=($(compgen -W '--json --help' -- "$cur")); return ;;
    run)
      if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W '--help' -- "$cur"))
      else COMPREPLY=($(compgen -W "$(vmlua recipes --json 2>/dev/null | sed -n 's/^ *"name": "\(.*\)",$/\1/p')" \
                                   -- "$cur") $(compgen -f -X '!*.lua' -- "$cur")); fi
      return ;;
    start|attach|ssh)
      if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W '--help' -- "$cur"))
      else COMPREPLY=($(compgen -W "$(_vmlua_instances)" -- "$cur")); fi
      return ;;
    stop)
      if [ "$prev" = --timeout ]; then return; fi
      if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W '--force --timeout --help' -- "$cur"))
      else COMPREPLY=($(compgen -W "$(_vmlua_instances)" -- "$cur")); fi
      return ;;
    rm)
      if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W '--force --help' -- "$cur"))
      else COMPREPLY=($(compgen -W "$(_vmlua_instances)" -- "$cur")); fi
      return ;;
    ?*)
      COMPREPLY=($(compgen -f -- "$cur")); return ;; # a script's own arguments
  esac
  case $prev in
    -e) return ;;
    -l) COMPREPLY=($(compgen -W 'vmlua' -- "$cur")); return ;;
    --allow) COMPREPLY=($(compgen -d -- "$cur")); return ;;
    --cpu-limit|--memory-limit) return ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W '-e -l -i -q -v -h --help --version --sandbox --allow --cpu-limit --memory-limit -- -' \
                         -- "$cur"))
  else
    COMPREPLY=($(compgen -W 'plan ls start stop attach ssh rm run recipes' -- "$cur")
               $(compgen -f -X '!*.lua' -- "$cur") $(compgen -d -- "$cur"))
  fi
}
complete -o filenames -F _vmlua vmlua
