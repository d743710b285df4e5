-- vmlua: define, boot and drive virtual machines from Lua.
local config = require "vmlua.config"
local machine = require "vmlua.machine"
local task = require "vmlua.task"

local vmlua = {
  version = "0.1.0",
  host = require("vmlua.host").facts(),
  size = require("vmlua.size").parse,
  vm = machine.new,
  linux = config.linux,
  efi = config.efi,
  disk = config.disk,
  nat = config.nat,
  console = config.console,
  after = task.after,
  every = task.every,
  sleep = task.sleep,
  spawn = task.spawn,
}

return vmlua
