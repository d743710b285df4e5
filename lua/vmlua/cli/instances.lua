-- vmlua ls, start, stop, attach, rm: instances from any terminal.
local core = require "vmlua.core"
local runtime = require "vmlua.runtime"
local size = require "vmlua.size"
local store = require "vmlua.instance.store"

local instances = {}

local HELP = {
  ls = [[
usage: vmlua ls [--json]
List the VMs that run (whoever runs them) and the detached instances:
name, state, host ("local", or the libvirt URI that runs it), arch, CPUs,
memory, forwarded ports, QEMU's pid, uptime.]],
  start = [[
usage: vmlua start NAME
Start a stopped detached instance again, from its saved configuration.]],
  stop = [[
usage: vmlua stop NAME [--force] [--timeout S]
Stop a running VM: the guest is asked to power off and, after S seconds
(default 15), forced off. --force forces it off at once.]],
  attach = [[
usage: vmlua attach NAME
Attach this terminal to a running VM's console; Ctrl-] detaches and
leaves it running.]],
  ssh = [[
usage: vmlua ssh NAME [COMMAND...]
Log in to a running VM with the system's ssh client, or run COMMAND there:
the key of its definition's ssh = { key = ... }, the NAT forward to its ssh
port, and a known_hosts file of the VM's own.]],
  rm = [[
usage: vmlua rm NAME [--force]
Forget a stopped instance: its state directory (configuration, status,
console log) goes. A running one is refused, unless --force stops it first.]],
}

local function fail(message)
  io.stderr:write("vmlua: ", message, "\n")
  return 1
end

local function uptime(seconds)
  if not seconds then return "-" end
  if seconds < 60 then return seconds .. "s" end
  if seconds < 3600 then return string.format("%dm%02ds", seconds // 60, seconds % 60) end
  return string.format("%dh%02dm", seconds // 3600, seconds % 3600 // 60)
end

local function ls(args)
  local list = store.list()
  if args[1] == "--json" then
    for _, s in ipairs(list) do
      if #(s.ports or {}) == 0 then s.ports = nil end -- an empty table would print as {}
    end
    io.stdout:write(core.json_encode(list, true):gsub("^{}$", "[]"), "\n")
    return 0
  end
  local rows = { { "NAME", "STATE", "HOST", "ARCH", "CPUS", "MEMORY", "PORTS", "PID", "UPTIME" } }
  for _, s in ipairs(list) do
    local ports = table.concat(s.ports or {}, ",")
    rows[#rows + 1] = { s.name, s.state or "?", s.host or "local", s.arch or "?",
      tostring(math.tointeger(s.cpus) or "?"), s.memory and size.format(s.memory) or "?", ports ~= "" and ports or "-",
      s.pid and tostring(math.tointeger(s.pid)) or "-", uptime(s.uptime) }
  end
  local widths = {}
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do widths[i] = math.max(widths[i] or 0, #cell) end
  end
  for _, row in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(row) do cells[i] = cell .. string.rep(" ", widths[i] - #cell) end
    io.stdout:write((table.concat(cells, "  "):gsub("%s+$", "")), "\n")
  end
  return 0
end

-- NAME and the options after it; nil, message for a wrong command line.
local function parse(args, known)
  local name, opts = nil, {}
  local i = 1
  while args[i] do
    local a = args[i]
    if a == "--timeout" and known.timeout then
      opts.timeout = tonumber(args[i + 1])
      if not opts.timeout or opts.timeout < 0 then return nil, "--timeout needs a number of seconds" end
      i = i + 2
    elseif a == "--force" and known.force then
      opts.force, i = true, i + 1
    elseif a:sub(1, 1) == "-" or name then
      return nil, "unexpected " .. a
    else
      name, i = a, i + 1
    end
  end
  if not name then return nil, "which VM?" end
  local problem = runtime.name_problem(name)
  if problem then return nil, problem end
  return name, opts
end

-- The status of a libvirt VM that no vmlua serves (store.keep_orphan), or nil.
local function orphaned(name)
  if store.running(name) then return nil end
  local status = store.stopped(name)
  return status and status.orphaned and status.host and status or nil
end

-- Stops an orphaned libvirt VM through libvirt, and records its end.
local function stop_orphan(name, status, opts)
  local outcome, err = require("vmlua.libvirt.orphan").stop(status.host, name, opts.force, opts.timeout or 15)
  if not outcome then return fail(string.format("vm %s: cannot stop it on %s: %s", name, status.host, err)) end
  status.state, status.orphaned, status.outcome = "stopped", nil, outcome
  status.reason = outcome == "graceful" and "the guest powered off" or "forced off through libvirt"
  runtime.write_file(store.paths(name).status, core.json_encode(status))
  io.stderr:write(string.format("vmlua: vm %s stopped (%s): %s\n", name, outcome, status.reason))
  return 0
end

local function stop(name, opts)
  local orphan = orphaned(name)
  if orphan then return stop_orphan(name, orphan, opts) end
  local vm = require("vmlua.instance.client").attach(name)
  local outcome = vm.remote and require("vmlua.machine").stop(vm, opts.force, opts.timeout)
  io.stderr:write(string.format("vmlua: vm %s stopped (%s): %s\n", name, outcome, tostring(vm.reason)))
  return 0
end

local function attach(name)
  local vm = require("vmlua.instance.client").attach(name)
  vm:console()
  return 0
end

local function start(name)
  if store.running(name) then return fail(string.format("vm %s is already running; vmlua attach %s reaches it",
                                                          name, name)) end
  local paths = store.paths(name)
  local cfg, err, missing = require("vmlua.config").load(paths.config)
  if missing then return fail("no instance named " .. name .. " (see vmlua ls)") end
  if not cfg then return fail(string.format("vm %s: %s: %s", name, paths.config, err)) end
  local vm = require("vmlua.machine").from_config(cfg)
  vm:start { detach = true }
  io.stderr:write(string.format("vmlua: started %s; vmlua attach %s reaches its console\n", tostring(vm), name))
  return 0
end

local function rm(name, opts)
  local running = store.running(name)
  if running and not opts.force then
    return fail(string.format("vm %s is running; stop it first (vmlua stop %s), or use rm --force", name, name))
  end
  local orphan = not running and orphaned(name)
  if orphan and (orphan.state == "running" or orphan.state == "paused") then
    if not opts.force then
      return fail(string.format("vm %s is running on %s; stop it first (vmlua stop %s), or use rm --force", name,
                                orphan.host, name))
    end
    if stop_orphan(name, orphan, { force = true }) ~= 0 then return 1 end
  end
  if running then stop(name, { force = true }) end
  local paths = store.paths(name)
  if not core.stat(paths.dir) then return fail("no instance named " .. name .. " (see vmlua ls)") end
  for _, file in ipairs { paths.config, paths.status, paths.log, paths.log .. ".1", paths.keeper_log,
                          paths.key, paths.key .. ".pub", paths.efi_vars } do
    os.remove(file)
  end
  local ok, err = os.remove(paths.dir)
  if not ok then return fail(string.format("vm %s: cannot remove %s", name, err)) end
  io.stderr:write("vmlua: removed ", name, "\n")
  return 0
end

-- vmlua ssh NAME [COMMAND...]: returns only when ssh cannot be run.
local function ssh_command(args)
  local name = args[1]
  if not name or name:sub(1, 1) == "-" then return fail("ssh: which VM?\n" .. HELP.ssh) end
  local problem = runtime.name_problem(name)
  if problem then return fail("ssh: " .. problem) end
  if not store.running(name) then return fail("no VM named " .. name .. " is running (see vmlua ls)") end
  local command = #args > 1 and table.concat(args, " ", 2) or nil
  local _, err = require("vmlua.ssh").command(name, command)
  return fail(err)
end

local COMMANDS = {
  ls = { run = ls },
  ssh = { run = ssh_command },
  start = { run = start, known = {} },
  stop = { run = stop, known = { force = true, timeout = true } },
  attach = { run = attach, known = {} },
  rm = { run = rm, known = { force = true } },
}

function instances.is_command(word)
  return COMMANDS[word] ~= nil
end

-- Runs `vmlua COMMAND args...` inside the main task; returns the exit status.
function instances.run(command, args)
  if args[1] == "--help" or args[1] == "-h" then
    io.stdout:write(HELP[command], "\n")
    return 0
  end
  local c = COMMANDS[command]
  if c.known == nil then return c.run(args) end
  local name, opts = parse(args, c.known)
  if not name then return fail(command .. ": " .. opts .. "\n" .. HELP[command]) end
  return c.run(name, opts)
end

return instances
