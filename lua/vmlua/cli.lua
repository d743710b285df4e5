-- The vmlua command line: lua-style options, `vmlua plan`, and running a
-- definition or script as a task on the event loop.
local core = require "vmlua.core"
local errors = require "vmlua.errors"
local notice = require "vmlua.notice"
local task = require "vmlua.task"

local cli = {}

-- Modules load when a path needs them: `vmlua -e ''` loads no VM code.
-- The VM module only once something loads it (no VM exists before).
local function loaded_machine()
  return package.loaded["vmlua.machine"]
end

-- The commands of cli/instances.lua, which is loaded only for them.
local INSTANCE_COMMANDS = { ls = true, start = true, stop = true, attach = true, ssh = true, rm = true }

local USAGE = [=[
usage: vmlua [options] [FILE [args]]
       vmlua plan [--json] FILE [args]
       vmlua ls [--json] | start NAME | stop NAME [--force] [--timeout S]
       vmlua attach NAME | ssh NAME [COMMAND...] | rm NAME [--force]
       vmlua run RECIPE [NAME=VALUE...] | recipes [--json]
Run FILE, a VM definition or script; with no FILE, start an interactive prompt.
  -e STAT   run the Lua statement STAT (the global vmlua is the module)
  -l MOD    require MOD into global MOD (-l g=MOD: into global g)
  -i        enter the interactive prompt after running FILE
  -q        quiet: no notices (only errors)
  -v, --version  print the version
  -h, --help     print this help
  --        stop handling options
  -         run standard input
  --sandbox run FILE, someone else's recipe, in a sandbox: no commands, reads
            only under its directory and vmlua's cache, its VMs' files too
            (vmlua plan --sandbox FILE: review what it would start)
  --connect URI  libvirt at URI runs the VMs (qemu:///system, or
            qemu+libssh://user@host/system for another host); see vmlua(1)
  --allow DIR            let the sandboxed FILE (and its VMs) use DIR as well
  --cpu-limit S          its Lua code's CPU time (default 1 s per run)
  --memory-limit SIZE    the memory its Lua code may take (default 64M)
Commands (each takes --help):
  plan      print the resolved VM(s) and QEMU command lines; start nothing
  ls        list running VMs and detached instances
  start     start a stopped detached instance again
  stop      stop a running VM (--force: at once; --timeout S: then force)
  attach    attach this terminal to a VM's console (Ctrl-] detaches)
  ssh       log in to a VM, or run a command there, with ssh
  rm        forget a stopped instance (--force: stop it first)
  run       boot a recipe found on the recipe path, with NAME=VALUE parameters
  recipes   list the recipes on the recipe path (VMLUA_PATH, ...)
Environment: VMLUA_DEBUG=qmp shows the QMP traffic; VMLUA_RUNTIME_DIR,
VMLUA_CACHE, VMLUA_ACCEL and the rest are in vmlua(1). At the prompt: help().]=]

local failed = false

local function report(message)
  failed = true
  -- an error may carry console lines: never the guest's escape sequences
  io.stderr:write("vmlua: ", require("vmlua.console").printable(tostring(message)), "\n")
  io.stderr:flush()
end

local function version()
  return "vmlua " .. require("vmlua").version .. " (" .. _VERSION .. ")"
end

-- Splits argv into options, script and script arguments, like lua.c.
local function parse(argv)
  local opts = { actions = {} }
  local i = 1
  while argv[i] do
    local a = argv[i]
    if a == "--" then
      i = i + 1
      break
    elseif a == "-" or a:sub(1, 1) ~= "-" then
      break
    elseif a == "-e" or a == "-l" then
      if not argv[i + 1] then return nil, "'" .. a .. "' needs an argument" end
      opts.actions[#opts.actions + 1] = { a, argv[i + 1] }
      i = i + 2
    elseif a == "-i" then
      opts.interactive, i = true, i + 1
    elseif a == "-q" then
      notice.quiet, i = true, i + 1
    elseif a == "-v" then
      opts.version, i = true, i + 1
    elseif a == "--help" or a == "-h" then
      opts.help, i = true, i + 1
    elseif a == "--version" then
      opts.version, i = true, i + 1
    elseif require("vmlua.sandbox.cli").takes(a) then -- --sandbox, --allow DIR, ...
      local next_i, err = require("vmlua.sandbox.cli").option(opts, argv, i)
      if not next_i then return nil, err end
      i = next_i
    else
      return nil, "unrecognized option '" .. a .. "'"
    end
  end
  opts.script = argv[i]
  opts.script_index = i
  local problem = require("vmlua.sandbox.cli").problem(opts)
  if problem then return nil, problem end
  return opts
end

-- The global `arg`: script at 0, its arguments from 1, the rest negative.
local function make_arg(argv, index)
  local t = {}
  for k = 0, #argv do t[k - index] = argv[k] end
  return t
end

local function run_actions(actions)
  for _, action in ipairs(actions) do
    local flag, value = action[1], action[2]
    if flag == "-e" then -- with the prompt's globals (vmlua, help)
      local chunk, err = load(value, "=(command line)", "t", require("vmlua.repl").environment())
      if not chunk then errors.raise(err) end
      chunk()
    else
      local name, mod = value:match("^([^=]+)=(.+)$")
      name, mod = name or value, mod or value
      _G[name] = require(mod)
    end
  end
end

local COMMANDS = { "plan", "ls", "start", "stop", "attach", "rm", "run", "recipes" }

local function load_script(script)
  if script ~= "-" then -- its directory is on the recipe path
    require("vmlua.recipe.path").script_dir = script:match("^(.*)/[^/]*$") or "."
  end
  local chunk, err = loadfile(script ~= "-" and script or nil)
  if not chunk then -- one line, as lua says it; `vmlua list` may have meant a command
    local near
    for _, command in ipairs(script:find("[./]") and {} or COMMANDS) do
      if command:sub(1, 1) == script:sub(1, 1) and require("vmlua.fields").distance(script, command) <= 2 then
        near = command
      end
    end
    errors.raise(near and string.format('%s (did you mean "vmlua %s"?)', err, near) or err)
  end
  return chunk
end

local function script_args(argv, index)
  local args = {}
  for k = index + 1, #argv do args[#args + 1] = argv[k] end
  return table.unpack(args)
end

local function handler(err)
  if err == "interrupted" then return err end -- by a signal, in a busy loop
  return errors.handler(err)
end

-- Runs fn as the main task and the loop until nothing is left to do; with
-- an interrupt watcher, a signal breaks fn even in a busy loop.
-- Returns true when fn finished without error.
local function run_main(fn, watcher)
  local ok = false
  task.spawn(function()
    local success, err
    if watcher then
      local called
      called, success, err = watcher:pcall(xpcall, fn, handler)
      if not called then success, err = false, success end
    else
      success, err = xpcall(fn, handler)
    end
    if success then
      ok = true
    else
      report(err)
      if loaded_machine() then loaded_machine().stop_all(false, 5) end
    end
    -- instances the script attached to run on without it
    local client = package.loaded["vmlua.instance.client"]
    if client then client.release_all() end
    if loaded_machine() then loaded_machine().let_go_all() end
  end)
  core.run()
  return ok
end

-- Ctrl-C, SIGTERM or SIGHUP (the terminal closed): stop the VMs gracefully
-- (a stop under way goes on) and exit 130, 143 or 129 (like a shell); a
-- second signal forces them off. While the script runs, the interrupt
-- watcher takes the signals, so that they break a busy loop too; the
-- watchers stay for the prompt.
local interrupted
local STATUS = { INT = 130, TERM = 143, HUP = 129 }
local function on_signal(name)
  failed = true
  local m = loaded_machine()
  if interrupted then
    io.stderr:write("\nvmlua: forcing VMs off\n")
    if m then m.stop_all(true) end
    return
  end
  interrupted = STATUS[name]
  if m and next(m.live) ~= nil then
    io.stderr:write("\nvmlua: stopping VMs (press Ctrl-C again to force them off)\n")
  end
  task.spawn(function()
    if m then m.stop_all(false) end
    core.stop()
  end)
end

local function handle_signals()
  local watchers = {}
  for name in pairs(STATUS) do watchers[#watchers + 1] = core.signal(name, on_signal) end
  return watchers
end

-- A VM that failed while nothing waited on it fails the run, with its reason.
local function report_failed_vms()
  for _, vm in ipairs(loaded_machine() and loaded_machine().defined or {}) do
    if vm.failure_unreported then
      vm.failure_unreported = nil
      report(string.format("vm %s: %s", vm.name, vm.reason))
    end
  end
end

-- os.exit from a script stops its VMs first, so no guest is cut off.
local function wrap_exit()
  local exit = os.exit
  os.exit = function(code, close) -- luacheck: ignore 122
    local m = loaded_machine()
    if m and next(m.live) ~= nil then
      if task.current() then
        m.stop_all(false)
      else
        for vm in pairs(m.live) do vm.process:close() end
      end
    end
    io.stdout:flush()
    exit(code, close)
  end
end

-- A file that only defines VMs is booted. One VM on a terminal gets the
-- terminal attached to its console (Ctrl-] detaches and stops it, as the
-- guest's poweroff does); otherwise the consoles stream to stdout.
local function boot_defined()
  local machine = require "vmlua.machine"
  local attach = #machine.defined == 1 and core.isatty(0) and core.isatty(1)
  for _, vm in ipairs(machine.defined) do
    if not attach then vm.config.console.stdio = true end
    notice.say("booting " .. vm.name .. (attach and " (Ctrl-] detaches and stops it)" or " (Ctrl-C stops it)"))
    vm:start()
  end
  if attach then
    local vm = machine.defined[1]
    require("vmlua.attach").console(vm, { stops = true }) -- "detached from dev; stopping it"
    if vm:can_stop() then vm:stop() end -- "stopped vm dev ...", or forced, announced
  end
  for _, vm in ipairs(machine.defined) do vm:wait("stopped") end
end

-- Whether a command-line word names a recipe rather than a file (cli/recipes.lua
-- decides, loaded only for a word that could be one: never for a FILE.lua).
local function is_recipe_name(word)
  return word:match("^[%w_%-%.]+$") ~= nil and not word:match("%.lua$") and require("vmlua.cli.recipes").is_name(word)
end

-- Whether a script's result is a recipe; only a script that made one loaded recipe.lua.
local function is_recipe(r)
  local recipe = package.loaded["vmlua.recipe"]
  return recipe ~= nil and recipe.is(r)
end

local function plan_command(argv)
  local json = false
  local i = 2
  local sandbox_opts = {} -- --sandbox [--allow DIR]...: the file runs in the sandbox
  while argv[i] == "--json" or require("vmlua.sandbox.cli").takes(argv[i]) do
    if argv[i] == "--json" then
      json, i = true, i + 1
    else
      local next_i, err = require("vmlua.sandbox.cli").option(sandbox_opts, argv, i)
      if not next_i then
        report("plan: " .. err)
        return 2
      end
      i = next_i
    end
  end
  local script = argv[i]
  if not script then
    report("plan: which file? usage: vmlua plan [--json] FILE")
    return 2
  end
  local machine = require "vmlua.machine"
  machine.dry_run, task.dry_run = true, true
  -- plan starts nothing, the script's own commands included
  local execute, popen = os.execute, io.popen
  local function refuse(name)
    return function()
      errors.raise(name .. ": vmlua plan does not run commands; run the file itself (vmlua " .. script .. ")", 2)
    end
  end
  os.execute, io.popen = refuse("os.execute"), refuse("io.popen") -- luacheck: ignore 122
  _G.arg = make_arg(argv, i)
  -- What the script prints goes to stderr: stdout carries only the plan.
  local stdout, print_ = io.stdout, print
  io.output(io.stderr)
  _G.print = function(...)
    local parts = table.pack(...)
    for k = 1, parts.n do parts[k] = tostring(parts[k]) end
    io.stderr:write(table.concat(parts, "\t", 1, parts.n), "\n")
  end
  local ok = run_main(function()
    if is_recipe_name(script) then -- vmlua plan RECIPE NAME=VALUE...
      local recipes = require "vmlua.cli.recipes"
      recipes.instantiate(require("vmlua.recipe").find(script), { table.unpack(argv, i + 1) })
    else -- a file; one that returns a recipe gets NAME=VALUE from the command line
      local sbx = sandbox_opts.sandbox
      local r = (sbx and require("vmlua.sandbox.cli").chunk(script, sbx) or load_script(script))(script_args(argv, i))
      if is_recipe(r) then require("vmlua.cli.recipes").instantiate(r, { table.unpack(argv, i + 1) }) end
    end
  end)
  io.output(stdout)
  _G.print = print_
  os.execute, io.popen = execute, popen -- luacheck: ignore 122
  if not ok then return 1 end
  if #machine.defined == 0 then
    report(script .. " defines no VM")
    return 1
  end
  local plan = require "vmlua.plan"
  local cfgs = {}
  for _, vm in ipairs(machine.defined) do cfgs[#cfgs + 1] = vm.config end
  local valid, _, messages = require("vmlua.validate").all(cfgs)
  if not valid then
    for _, message in ipairs(messages) do report(message) end
    return 1
  end
  if json then
    stdout:write(plan.json(cfgs), "\n")
  else
    for n, cfg in ipairs(cfgs) do
      if n > 1 then stdout:write("\n") end
      stdout:write(plan.text(cfg), "\n")
    end
  end
  return 0
end

-- vm:stop() says how it went, on stderr: machine.announce_stops, set when
-- the VM module loads (a preload that loads it from its file).
local function announce_stops()
  if loaded_machine() then
    loaded_machine().announce_stops = true
    return
  end
  package.preload["vmlua.machine"] = function(name)
    package.preload[name] = nil
    local m = require(name)
    m.announce_stops = true
    return m
  end
end

function cli.main(argv)
  task.report = report
  announce_stops()
  -- vmlua [-q] [--connect URI] ... COMMAND|FILE: libvirt at URI runs every VM of the run
  while argv[1] == "--connect" or (argv[1] == "-q" and (argv[2] == "plan" or argv[2] == "run"
                                   or argv[2] == "recipes" or argv[2] == "--connect" or INSTANCE_COMMANDS[argv[2]])) do
    if argv[1] == "-q" then
      notice.quiet = true -- vmlua -q COMMAND ...
      table.remove(argv, 1)
    else
      local uri = argv[2]
      if not uri or not uri:match("^[%a][%w+.-]*://") then
        report("--connect needs a libvirt URI, such as qemu:///system or qemu+libssh://user@host/system\n" .. USAGE)
        return 2
      end
      require("vmlua.config").connect = uri
      table.remove(argv, 1)
      table.remove(argv, 1)
    end
  end
  if argv[1] == "plan" then return plan_command(argv) end
  if argv[1] == "keeper" then return require("vmlua.instance.keeper").main(argv[2]) end
  if argv[1] == "recipes" then
    local code
    local ok = run_main(function() code = require("vmlua.cli.recipes").list_command({ table.unpack(argv, 2) }) end)
    return ok and code or 1
  end
  local run_recipe -- vmlua run RECIPE ...: RECIPE runs as a file that returns the recipe
  if argv[1] == "run" then
    local code
    run_recipe, code = require("vmlua.cli.recipes").run_args(argv)
    if not run_recipe then return code end
    table.remove(argv, 1)
  end
  if INSTANCE_COMMANDS[argv[1]] then
    local code
    local instances = require "vmlua.cli.instances"
    local ok = run_main(function() code = instances.run(argv[1], { table.unpack(argv, 2) }) end)
    return ok and code or 1
  end
  local opts, err = parse(argv)
  if not opts then
    report(err .. "\n" .. USAGE)
    return 2
  end
  if opts.help then
    io.stdout:write(USAGE, "\n")
    return 0
  end
  if opts.version then io.stdout:write(version(), "\n") end
  _G.arg = make_arg(argv, opts.script and opts.script_index or 0)
  local signals = handle_signals()
  -- after core.signal, so that closing it gives the signals back to the loop
  local watcher = core.interrupt(function(_, name) on_signal(name) end, { "INT", "TERM", "HUP" })
  wrap_exit()
  local locals -- the file's locals, for the prompt of -i
  local ok = run_main(function()
    run_actions(opts.actions)
    if opts.script then
      local started = loaded_machine() and #loaded_machine().defined or 0
      local found -- where vmlua run found its recipe
      local chunk = run_recipe and function()
        local r, _, origin = require("vmlua.cli.recipes").resolve_name(run_recipe)
        found = origin
        return r
      end or opts.sandbox and require("vmlua.sandbox.cli").chunk(opts.script, opts.sandbox)
        or load_script(opts.script)
      if opts.interactive then
        locals = require("vmlua.repl").capture(chunk, script_args(argv, opts.script_index))
      else
        local r = chunk(script_args(argv, opts.script_index))
        -- a file that returns a recipe: NAME=VALUE arguments are its parameters
        if is_recipe(r) and require("vmlua.cli.recipes").instantiate(r, { script_args(argv, opts.script_index) },
                                                                      found) == "help" then
          return
        end
      end
      local any_started = false
      local defined = loaded_machine() and loaded_machine().defined or {}
      for _, vm in ipairs(defined) do
        if vm.state ~= "stopped" or vm.process or vm.remote then any_started = true end
      end
      if not any_started and #defined > started and not opts.interactive then
        boot_defined()
      end
    end
    -- -i: the prompt opens once the file has run, its VMs running or not
    if opts.interactive then core.stop() end
  end, watcher)
  watcher:close()
  report_failed_vms()
  if ok and (opts.interactive or (not opts.script and #opts.actions == 0 and not opts.version)) then
    -- The prompt stops the VMs still running when it ends, and says so.
    -- Piped input that raised an error fails the run, as `lua -` does.
    if not require("vmlua.repl").run { report = report, version = version(), locals = locals } then
      failed = true
    end
  end
  for _, s in ipairs(signals) do s:close() end
  return interrupted or ((failed or not ok) and 1 or 0)
end

return cli
