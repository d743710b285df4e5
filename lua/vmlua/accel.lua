-- Accelerators: which ones really run guests on this host, and which one a
-- guest gets.
--
-- KVM is offered only when it runs a guest: a /dev/kvm that opens is not
-- enough (a nested, paravirtual KVM opens, and QEMU then aborts with
-- "failed to set MSR 0x10a"). The probe starts QEMU paused under KVM with
-- QMP on a pty and waits for qmp_capabilities to answer; a broken KVM kills
-- QEMU before that, within about 50 ms. It runs only when a native guest
-- needs the decision and /dev/kvm opens read-write, and its result is kept
-- in CACHE/accel.json, keyed by the host kernel, the QEMU binary and the
-- identity of /dev/kvm, so later runs do not probe again.
--
-- VMLUA_KVM_DEVICE (for tests) names another device to check and identify
-- in place of /dev/kvm; QEMU itself still opens /dev/kvm.
local core = require "vmlua.core"
local host = require "vmlua.host"
local runtime = require "vmlua.runtime"
local task = require "vmlua.task"

local accel = {}

accel.names = { "kvm", "hvf", "tcg" }
accel.probe_timeout = 5
local CACHE_ENTRIES = 8

local kvm -- { ok=, why= }, once per process (or accel.reset)

function accel.reset()
  kvm = nil
end

function accel.device()
  local dev = os.getenv("VMLUA_KVM_DEVICE")
  if dev and dev ~= "" then return dev end
  return "/dev/kvm"
end

-- The line of QEMU's output that says what went wrong, as one line.
function accel.words(text)
  local first
  for line in tostring(text or ""):gmatch("[^\r\n]+") do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" and line:sub(1, 1) ~= "{" then
      if line:lower():find("error") or line:lower():find("fail") then return line end
      first = first or line
    end
  end
  return first
end

-- "dev:ino:rdev" of the device and "dev:ino:size:mtime" of QEMU.
local function identities(device, qemu)
  local d, q = core.stat(device), core.stat(qemu)
  return d and string.format("%d:%d:%d", d.dev, d.ino, d.rdev) or "",
         q and string.format("%d:%d:%d:%d", q.dev, q.ino, q.size, q.mtime) or ""
end

-- What the cached answer depends on: the host kernel, the QEMU binary and
-- the device.
local function cache_key(device, qemu)
  local function text(path) return ((runtime.read_file(path) or ""):gsub("%s+$", "")) end
  local dev, bin = identities(device, qemu)
  return table.concat({ text("/proc/sys/kernel/osrelease"), text("/proc/sys/kernel/version"),
                        device, dev, qemu, bin }, "|")
end

local function cache_file()
  return runtime.cache() .. "/accel.json"
end

local function load_cache()
  local text = runtime.read_file(cache_file())
  local doc = text and core.json_decode(text)
  if type(doc) ~= "table" or type(doc.kvm) ~= "table" then return { kvm = {} } end
  return doc
end

-- Makes the missing directories of `dir`, each private.
local function make_dirs(dir)
  local st = core.stat(dir)
  if st then return st.type == "directory" end
  local parent = dir:match("^(.+)/[^/]+$")
  if parent and not make_dirs(parent) then return false end
  return core.mkdir_private(dir) ~= nil
end

-- Writes the cache atomically (a reader never sees a part).
local function save_cache(key, entry)
  local file = cache_file()
  if not make_dirs(file:match("^(.*)/")) then return end
  local doc = load_cache()
  local list = {}
  for _, e in ipairs(doc.kvm) do
    if type(e) == "table" and e.key ~= key then list[#list + 1] = e end
  end
  while #list >= CACHE_ENTRIES do table.remove(list, 1) end
  entry.key = key
  list[#list + 1] = entry
  runtime.write_file(file, core.json_encode({ kvm = list }, true) .. "\n")
end

local function qmp_probe_argv(qemu, arch)
  return { qemu, "-accel", "kvm", "-cpu", "host", "-S",
           "-machine", arch == "aarch64" and "virt,gic-version=host" or "q35",
           "-nodefaults", "-no-user-config", "-display", "none", "-qmp", "stdio" }
end

-- accel.probe(qemu, arch) -> true | false, why | nil, why (no answer: not a
-- verdict to keep). Starts QEMU paused under KVM with QMP on a pty (the
-- process API's way to write to a child) and waits for qmp_capabilities.
function accel.probe(qemu, arch)
  local out, proc, exit, spawn_err, exited = "", nil, nil, nil, nil
  local function run()
    return task.await(function(wake)
      local sent = false
      proc, spawn_err = core.spawn {
        file = qemu, args = qmp_probe_argv(qemu, arch), pty = { rows = 24, cols = 200 },
        on_stdout = function(data)
          out = out .. data
          if not sent and out:find('{"QMP"', 1, true) then
            sent = true
            proc:write('{"execute":"qmp_capabilities"}\n')
          elseif sent and out:find('"return"', 1, true) then
            wake(true)
          end
        end,
        on_exit = function(code, signal)
          exit = { code = code, signal = signal }
          wake(false)
          if exited then exited() end
        end,
      }
      if not proc then wake(false) end
    end, accel.probe_timeout)
  end
  local ran, answered = pcall(run)
  if ran and answered and not exit then
    proc:write('{"execute":"quit"}\n')
    pcall(task.await, function(wake) exited = wake end, 1)
  end
  if proc then proc:close() end
  if not ran then error(answered, 0) end
  if answered then return true end
  local device = accel.device()
  if not exit then
    if spawn_err then return nil, spawn_err end
    return nil, string.format("QEMU did not answer under KVM within %g s", accel.probe_timeout)
  end
  local words = accel.words(out)
  if exit.signal then
    return false, string.format("%s opens but QEMU aborts under KVM: %s", device,
      words and (words .. " (SIG" .. exit.signal .. ")") or ("killed by SIG" .. exit.signal))
  end
  return false, string.format("%s opens but QEMU fails under KVM: %s", device,
    words or ("exit status " .. tostring(exit.code)))
end

-- What can be known about KVM without starting anything, or nil.
local function known()
  if kvm then return kvm end
  local facts = host.base()
  if facts.os ~= "linux" then
    kvm = { ok = false, why = "no KVM on " .. facts.os }
    return kvm
  end
  local opened, err = core.can_open(accel.device(), "rw")
  if not opened then
    local why = tostring(err)
    if why:find("Permission denied", 1, true) then why = why .. "; add yourself to the kvm group" end
    kvm = { ok = false, why = "no KVM here (" .. why .. ")" }
    return kvm
  end
  if not host.qemu_binary(facts.arch) then
    kvm = { ok = false, why = "qemu-system-" .. facts.arch .. " is not on PATH" }
    return kvm
  end
  return nil
end

-- Whether accel.kvm() would answer without a probe or a cache look-up.
function accel.settled()
  return known() ~= nil
end

-- accel.kvm() -> { ok = bool, why = string }: whether KVM runs a guest of
-- the host's architecture here, and why (for messages and vmlua plan).
function accel.kvm()
  if known() then return kvm end
  local facts = host.base()
  local device = accel.device()
  local qemu = host.qemu_binary(facts.arch)
  local key = cache_key(device, qemu)
  for _, e in ipairs(load_cache().kvm) do
    if type(e) == "table" and e.key == key and type(e.why) == "string" then
      kvm = { ok = e.ok == true, why = e.why }
      return kvm
    end
  end
  local ok, why = accel.probe(qemu, facts.arch)
  if ok then why = device .. " runs guests (probed)" end
  kvm = { ok = ok == true, why = why }
  if ok ~= nil then save_cache(key, { ok = ok, why = why }) end
  return kvm
end

-- QEMU died under KVM although the probe passed: KVM is not offered again
-- in this process. `words` are QEMU's.
function accel.kvm_failed(words)
  kvm = { ok = false, why = string.format("%s opens but QEMU dies under KVM: %s", accel.device(), words) }
end

-- The accelerators that run guests of the host's architecture here.
function accel.usable()
  local facts = host.base()
  local list = {}
  if facts.os == "linux" and accel.kvm().ok then list[#list + 1] = "kvm" end
  if facts.os == "macos" then list[#list + 1] = "hvf" end
  if host.qemu_binary(facts.arch) then list[#list + 1] = "tcg" end
  return list
end

local function article(word)
  return word:match("^[aeiouxAEIOUX]") and "an" or "a"
end

-- accel.choose(arch, asked, by) -> name, why, warning|nil | nil, problem
-- `asked` is the accelerator a definition or VMLUA_ACCEL asked for (nil:
-- choose), `by` says which ("VMLUA_ACCEL" or "accel"). A guest of another
-- architecture is always emulated; a native one uses KVM when it runs here
-- (Linux), HVF on macOS, and TCG otherwise.
function accel.choose(arch, asked, by)
  local facts = host.base()
  local native = arch == facts.arch
  local foreign = not native and string.format("%s guest on %s %s host: emulated, expect it to be slow",
    tostring(arch), article(facts.arch), facts.arch) or nil
  local source = by == "VMLUA_ACCEL" and ("VMLUA_ACCEL=" .. tostring(asked)) or string.format('"%s"', tostring(asked))
  local asker = by == "VMLUA_ACCEL" and "VMLUA_ACCEL" or "the definition"
  if asked == "tcg" then
    return "tcg", "asked for by " .. asker, foreign
  elseif asked == "hvf" or asked == "kvm" then
    local os_of = { hvf = "macos", kvm = "linux" }
    if facts.os ~= os_of[asked] then
      return nil, string.format('%s is not on %s; here use "%s"', source, facts.os,
        table.concat(accel.usable(), '" or "'))
    elseif not native then
      return nil, string.format('%s runs only %s guests on this host, and this one is %s: use "tcg"',
        source, facts.arch, tostring(arch))
    elseif asked == "hvf" then
      return "hvf", "asked for by " .. asker
    end
    local k = accel.kvm()
    if not k.ok then return nil, string.format("%s cannot be used: %s", source, k.why) end
    return "kvm", "asked for by " .. asker .. "; " .. k.why
  elseif asked ~= nil then
    return nil, string.format("%s is not an accelerator (%s)", source, table.concat(accel.names, ", "))
  end
  if not native then return "tcg", foreign, foreign end
  if facts.os == "macos" then return "hvf", "the macOS hypervisor" end
  local k = accel.kvm()
  if k.ok then return "kvm", k.why end
  return "tcg", k.why, string.format("%s guest: %s, emulated with TCG, expect it to be slow", arch, k.why)
end

return accel
