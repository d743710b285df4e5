--- vmlua: define, boot and drive virtual machines from Lua.
-- @module vmlua

-- Most fields are loaded on first use, so that `require "vmlua"` (and every
-- `vmlua` start) loads only what the script uses: `lazy(MODULE, FIELD)` is
-- MODULE's FIELD, and `lazy(fn)` what fn returns, looked up the first time
-- the field is read. The value is the module's own (no wrapper), so that
-- vmlua.vm{} and the like report errors at the caller's line. pairs() sees
-- every field, loading them all; the metatable's __lazy lists their names
-- for completion.
local LAZY = setmetatable({}, { __mode = "k" })

local function lazy(module, field)
  local make = type(module) == "function" and module or function() return require(module)[field] end
  local mark = {}
  LAZY[mark] = make
  return mark
end

local vmlua = {
  --- vmlua's version, a string ("0.1.0").
  version = "0.1.0",
  --- What this host has: `{ cpus=, memory= (bytes), arch=, os=, accels= }`.
  -- `accels` lists what runs guests here ("kvm" only if QEMU ran under it, probed; "tcg").
  host = lazy(function() return require("vmlua.host").facts() end),
  --- A size in bytes, from a number of bytes or a string ("512M", "2G", "1.5GiB").
  -- @function size
  -- @tparam number|string size the size
  -- @treturn integer bytes
  size = lazy("vmlua.size", "parse"),
  --- Defines a VM; fails at the caller's line if a field is wrong. See the README's Configuration.
  -- @function vm
  -- @tparam table spec `name`, `arch`, `accel`, `cpus`, `memory`, `boot`, `disks`, `net`, `shares`, `console`,
  -- `reboot` (a guest's reboot restarts it rather than ending the VM), `qemu` (extra QEMU arguments, unchecked),
  -- `ssh` (`{ user=, key=, port= }`), `cloudinit` (a `vmlua.cloudinit{}` seed),
  -- `agent` (a port for the QEMU guest agent, which vm:run uses)
  -- @treturn VM the VM, stopped
  vm = lazy("vmlua.machine", "new"),
  --- A VM rebuilt from a snapshot (vm:save) and restored: it runs where it was saved.
  -- @function restore
  -- @tparam string path the snapshot's directory
  -- @tparam[opt] table opts `name`, `ephemeral` (writes go to a throw-away overlay: a clone)
  -- @treturn VM the VM, running
  restore = lazy("vmlua.snapshot", "restore"),
  --- Direct Linux boot: a kernel, an initrd and a command line.
  -- @function linux
  -- @tparam table spec `kernel`, `initrd`, `cmdline` (a list), `firmware` (a path, or false)
  linux = lazy("vmlua.config", "linux"),
  --- Boot through UEFI firmware, from the disks (the first disk first): a disk carrying its own boot loader.
  -- @function efi
  -- @tparam[opt] table spec `firmware` (default: the distribution's), `vars` (the UEFI variable store; made
  -- from the firmware's template when missing; default: the VM's own, kept across its starts)
  efi = lazy("vmlua.config", "efi"),
  --- A disk: an image file (raw or qcow2) or a block device.
  -- @function disk
  -- @tparam table spec `path`, `format`, `readonly`, `size`, `base`, `ephemeral`
  disk = lazy("vmlua.config", "disk"),
  --- User-mode NAT networking, with host ports forwarded to the guest.
  -- @function nat
  -- @tparam[opt] table spec `forward` ({ [host port] = guest port }, TCP), `udp` (the same, UDP),
  -- `address` (default 127.0.0.1)
  nat = lazy("vmlua.config", "nat"),
  --- A private Ethernet network between the VMs on it, of this script and of other vmlua processes
  -- (detached instances too), switched by a VDE switch that ends with the last VM on it. Each VM on it
  -- gets a MAC address derived from its name and the LAN's: `net = { vmlua.lan { name = "lab" } }`.
  -- @function lan
  -- @tparam table spec `name` (letters, digits, '.', '_', '-'; at most 32)
  lan = lazy("vmlua.config", "lan"),
  --- A host directory shared with the guest through virtio-fs; the guest mounts it by its tag
  -- (`mount -t virtiofs TAG /mnt`). Needs root and QEMU's virtiofsd.
  -- @function share
  -- @tparam table spec `host` (a directory), `tag` (1 to 36 letters, digits, '.', '_', '-'), `readonly`
  share = lazy("vmlua.config", "share"),
  --- A cloud-init NoCloud seed (label cidata), built at start with xorriso, cached by content, attached
  -- read-only: `cloudinit = vmlua.cloudinit{...}` in `vmlua.vm{}`. With `ssh = { user = ... }` and no key,
  -- the VM gets an ssh key of its own, which the seed's user-data hands to the guest.
  -- @function cloudinit
  -- @tparam table spec `user_data` (a "#cloud-config" text, or a table written as JSON), `meta_data` (a table;
  -- `instance-id` and `local-hostname` are filled in), `network_config` (a text, or a table)
  cloudinit = lazy("vmlua.config", "cloudinit"),
  --- The libvirt backend: libvirt runs the VM, on this host or another (`backend = vmlua.libvirt{...}` in
  -- `vmlua.vm{}`); the same life cycle, events, console and errors as QEMU run by vmlua.
  -- @function libvirt
  -- @tparam[opt] table spec `uri` (default "qemu:///system"; "qemu+ssh://user@host/system" for another host),
  -- `pool` (the host's storage pool for uploaded files)
  libvirt = lazy("vmlua.config", "libvirt"),
  --- libvirt hosts to place VMs on (`backend = vmlua.hosts{...}` in `vmlua.vm{}`): each new VM goes to
  -- the host with the most free memory; `hosts:on("rack1")` names one.
  -- @function hosts
  -- @tparam table spec hosts named by key, `{ rack1 = vmlua.libvirt{ uri = ... }, ... }`, or a list of
  -- vmlua.libvirt{} (named by their URI's host)
  hosts = lazy("vmlua.config", "hosts"),
  --- The serial console: logged to a file, or shown on the terminal ("stdio").
  -- @function console
  -- @tparam table|string spec `{ log = PATH }`, or "stdio"
  console = lazy("vmlua.config", "console"),
  --- Runs fn as a task after a delay; returns the timer (timer:stop() cancels it).
  -- @function after
  -- @tparam number seconds the delay
  -- @tparam function fn what to run
  after = lazy("vmlua.task", "after"),
  --- Runs fn as a task every `seconds` until the timer is stopped.
  -- @function every
  -- @tparam number seconds the period
  -- @tparam function fn what to run
  every = lazy("vmlua.task", "every"),
  --- Waits without blocking the event loop: other VMs, timers and consoles go on.
  -- @function sleep
  -- @tparam number seconds how long
  sleep = lazy("vmlua.task", "sleep"),
  --- Runs fn(...) as a task at once (it may wait, as a script does); returns its coroutine.
  -- @function spawn
  -- @tparam function fn what to run
  -- @param ... its arguments
  spawn = lazy("vmlua.task", "spawn"),
  --- Drives an instance that another vmlua runs (`vm:start{detach=true}`), as a VM object.
  -- @function attach
  -- @tparam string name the instance's name
  -- @treturn VM
  attach = function(name) return require("vmlua.instance.client").attach(name) end,
  --- The instances there are, running or kept, as `vmlua ls` lists them (its JSON, as tables).
  -- @function instances
  -- @treturn {table,...} a status for each: `name`, `state`, `pid` and more
  instances = function() return require("vmlua.instance.store").list() end,
  --- A path relative to the file that calls it, as relative paths in a definition are; for io.open and
  -- the like, which resolve against the current directory. An absolute path, or `~/...`, is kept.
  -- @function here
  -- @tparam string path a path ("scratch.img")
  -- @treturn string the absolute path (the current directory's when the caller has no file, as at the prompt)
  here = lazy(function()
    local errors, fields = require "vmlua.errors", require "vmlua.fields"
    return fields.entry(function(where, path)
      if type(path) ~= "string" or path == "" then
        errors.raise(string.format("%s: here: expected a path (a string), got %s", fields.location(where),
                                   path == "" and "an empty string" or fields.describe(path)))
      end
      return fields.resolve(where, path)
    end)
  end),
  --- Runs a host command without blocking the loop (consoles are read meanwhile); no shell.
  -- @function exec
  -- @tparam {string,...} argv the command and its arguments; argv[1] is looked up on PATH
  -- @tparam[opt] table opts `timeout` (seconds; the command is killed and exec raises), `stdin` (a file)
  -- @treturn string its standard output
  -- @treturn integer its exit status (128 + the signal's number if a signal ended it)
  -- @treturn string its standard error
  exec = function(argv, opts) return require("vmlua.exec").run(argv, opts) end,
  --- Waits until a TCP port accepts connections (and, with `banner`, sends what matches it).
  -- @function wait_port
  -- @tparam string address a numeric address ("127.0.0.1")
  -- @tparam integer port the port
  -- @tparam[opt] table opts `timeout` (seconds, default 60), `banner` (a Lua pattern, "^SSH%-" for sshd)
  -- @treturn boolean true; raises when the timeout passes first
  wait_port = function(address, port, opts) return require("vmlua.exec").wait_port(address, port, opts) end,
  --- Every VM this session has defined, in order (a VM that no local names too).
  -- @function vms
  -- @treturn {VM,...}
  vms = function()
    local machine = package.loaded["vmlua.machine"] -- none defined before it is loaded
    return machine and table.move(machine.defined, 1, #machine.defined, 1, {}) or {}
  end,
  --- The local path of an image given by URL and SHA-256: downloaded once (http, https) into
  -- `$XDG_CACHE_HOME/vmlua/images`, resumed if interrupted, verified before use; a local path or
  -- file:// URL is verified where it is. A progress bar shows on a terminal.
  -- @function image
  -- @tparam table spec `url` (http, https, file, or a path), `sha256` (64 hex digits)
  -- @treturn string the image's path; raises naming the URL on an HTTP error or a wrong checksum
  image = lazy("vmlua.image", "get"),
  --- Declares a recipe: a parameterised VM definition that a file returns, to share, extend and run
  -- (`vmlua run NAME key=value`). `vmlua.recipe.find "NAME"` finds one on the recipe path. See the README's Recipes.
  -- @function recipe
  -- @tparam table spec `description`, `params` (`{ NAME = { type=, default=, description=, values= } }`),
  -- `define` (a function(p) that returns the VM(s))
  -- @treturn Recipe with `:make(values)` (or a call), `:extend{...}` and `:resolve(values)`
  recipe = lazy("vmlua.recipe", "api"),
  --- Loads a recipe file and returns its recipe; with `{ sandbox = true }`, in the sandbox (see the README).
  -- @function load_recipe
  -- @tparam string path the recipe's file
  -- @tparam[opt] table opts `sandbox`, and the sandbox's own options
  -- @treturn Recipe
  load_recipe = function(path, opts) return require("vmlua.recipe").load(path, opts) end,
}

local names = {} -- of the lazy fields, sorted
for name, v in pairs(vmlua) do
  if LAZY[v] then names[#names + 1] = name end
end
table.sort(names)
local makers = {}
for _, name in ipairs(names) do makers[name], vmlua[name] = LAZY[vmlua[name]], nil end

setmetatable(vmlua, {
  __index = function(t, k)
    local make = makers[k]
    if make == nil then return nil end
    local v = make()
    rawset(t, k, v)
    return v
  end,
  __pairs = function(t)
    for _, name in ipairs(names) do local _ = t[name] end
    return next, t, nil
  end,
  __lazy = names,
})

return vmlua
