-- The keeper of a detached instance: a `vmlua keeper NAME` process that
-- runs one VM from its state directory's config.json and nothing else. It
-- holds the VM's name lock, logs its console (rotated), serves it to
-- clients (instance/server.lua), records how it ended, and exits with it.
-- A guard (src/guard.c) powers the guest off if the keeper dies.
--
-- vm:start{ detach = true } starts a keeper, waits for its word (a JSON
-- line on its stdout: ready, or why not), and binds the VM object to it.
local core = require "vmlua.core"
local config = require "vmlua.config"
local errors = require "vmlua.errors"
local runtime = require "vmlua.runtime"
local store = require "vmlua.instance.store"
local task = require "vmlua.task"
local validate = require "vmlua.validate"

local keeper = {
  ready_timeout = 120, -- a start under TCG, after a KVM that failed
}

local ENDED = { stopped = true, error = true }

-- The vmlua executable: this one, or (under plain lua, as in busted) the
-- one installed beside the core module: PREFIX/lib/lua/5.4/vmlua/core.so
-- and PREFIX/bin/vmlua.
function keeper.executable()
  local exe = core.exepath()
  if exe and exe:match("/vmlua[^/]*$") then return exe end
  local env = os.getenv("VMLUA_BIN")
  if env and env ~= "" then return core.realpath(env) or env end
  local so = package.searchpath("vmlua.core", package.cpath)
  local prefix = so and (core.realpath(so) or so):match("^(.*)/lib/lua/5%.4/vmlua/core%.so$")
  if prefix and core.executable(prefix .. "/bin/vmlua") then return prefix .. "/bin/vmlua" end
  return "vmlua"
end

-- vm:start{ detach = true }
function keeper.start(vm)
  vm:_check("start")
  local ok, err = validate.vm(vm.config)
  if not ok then errors.raise(err, 2) end
  local status = store.running(vm.name)
  if status then
    errors.raise(string.format("vm %s: cannot start: it is already running (vmlua pid %s); "
      .. "vmlua attach %s reaches it", vm.name, tostring(math.tointeger(status.vmlua) or "?"), vm.name), 2)
  end
  local paths
  paths, err = store.prepare(vm.name)
  if not paths then errors.raise(string.format("vm %s: cannot start: %s", vm.name, err), 2) end
  runtime.write_file(paths.config, config.encode(vm.config))
  local out, said = "", ""
  local exe = keeper.executable()
  local process
  local word = task.await(function(wake)
    process, err = core.spawn {
      file = exe, args = { exe, "keeper", vm.name }, detached = true,
      on_stdout = function(data)
        out = out .. data
        local line = out:match("^([^\n]*)\n")
        if line then wake(core.json_decode(line) or { error = line }) end
      end,
      on_stderr = function(data) said = said .. data end,
      on_exit = function(code, signal)
        wake({ error = string.format("its keeper %s%s", signal and ("was killed by SIG" .. signal)
          or ("exited with status " .. tostring(code)), said ~= "" and (": " .. said) or "") })
      end,
    }
    if not process then wake({ error = err }) end
  end, keeper.ready_timeout)
  if process then process:close() end -- detached: it runs on
  if said ~= "" then io.stderr:write(said) end -- its notices (TCG, say)
  if type(word) ~= "table" then
    word = { error = string.format("its keeper said nothing within %g s", keeper.ready_timeout) }
  end
  if word.error then
    local hint = word.error:find("^already running") and ("; vmlua attach " .. vm.name .. " reaches it") or ""
    errors.raise(string.format("vm %s: cannot start: %s%s", vm.name, word.error, hint), 2)
  end
  local bound
  bound, err = require("vmlua.instance.client").bind(vm)
  if not bound then errors.raise(string.format("vm %s: started, but %s", vm.name, err), 2) end
  return vm
end

local function say(t)
  io.stdout:write(core.json_encode(t), "\n")
  io.stdout:flush()
end

local function record(vm, paths, started)
  local status = require("vmlua.instance.server").describe(vm, started)
  status.ended = ENDED[vm.state] and os.time() or nil
  runtime.write_file(paths.status, core.json_encode(status))
end

-- `vmlua keeper NAME`: runs the instance until it ends; returns the exit status.
function keeper.main(name)
  local machine = require "vmlua.machine"
  local paths = store.paths(name or "")
  local cfg, err
  if name and not runtime.name_problem(name) then cfg, err = config.load(paths.config) end
  if not cfg then
    say { error = "no instance " .. tostring(name) .. " to keep" .. (err and (": " .. err) or "") }
    return 1
  end
  local vm = machine.from_config(cfg)
  vm.detached, vm.log_path = true, paths.log
  local started = os.time()
  vm:on("state", function() record(vm, paths, started) end)
  -- A TERM (the system shutting down, say) stops the guest gracefully.
  local signals = {}
  for _, sig in ipairs { "TERM", "HUP", "INT" } do
    signals[#signals + 1] = core.signal(sig, function()
      task.spawn(function() pcall(machine.stop, vm, false) end)
    end)
  end
  local code = 1
  task.spawn(function()
    local ok, why = pcall(vm.start, vm)
    if ok then
      say { ready = true, pid = vm.process:pid() }
      core.redirect_stdio(paths.keeper_log)
      vm:_wait_until(function(s) return ENDED[s] end)
      code = vm.state == "stopped" and 0 or 1
    else
      say { error = (tostring(why):gsub("^vm %S+: cannot start: ", "")) }
    end
    record(vm, paths, started)
    for _, s in ipairs(signals) do s:close() end
  end)
  core.run()
  return code
end

return keeper
