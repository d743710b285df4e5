-- A VM's console: everything the guest prints is logged, kept for expect(),
-- and optionally shown on the terminal; send() types into it.
local core = require "vmlua.core"
local task = require "vmlua.task"

local console = {}
local Console = {}
Console.__index = Console

local TAIL_BYTES = 64 * 1024   -- kept for error messages
local PENDING_BYTES = 1024 * 1024 -- unmatched output kept for expect()

-- opts: log (path), stdio (boolean)
function console.new(opts)
  local self = setmetatable({ tail = "", pending = "", changed = task.condition(), stdio = opts.stdio },
                            Console)
  if opts.log then
    self.log = assert(io.open(opts.log, "ab"))
    self.log:setvbuf("no")
    core.chmod(opts.log, tonumber("600", 8)) -- a console can show secrets
  end
  return self
end

function Console:attach(stream)
  self.stream = stream
  stream:read(function(data)
    if data then self:_output(data) else self:_ended() end
  end)
end

function Console:_output(data)
  if self.log then self.log:write(data) end
  if self.tee then self.tee(data) -- a terminal attached by vm:console()
  elseif self.stdio then io.stdout:write(data) io.stdout:flush() end
  self.tail = (self.tail .. data):sub(-TAIL_BYTES)
  self.pending = (self.pending .. data):sub(-PENDING_BYTES)
  self.changed.notify()
end

function Console:_ended()
  if self.ended then return end
  self.ended = true
  if self.stream then self.stream:close() end
  self.changed.notify()
  if self.on_end then self.on_end() end
end

function Console:close()
  self:_ended()
  if self.log then self.log:close() self.log = nil end
end

-- The last n lines of output, with carriage returns removed.
function Console:last_lines(n)
  local lines = {}
  for line in (self.tail:gsub("\r", "") .. "\n"):gmatch("([^\n]*)\n") do
    lines[#lines + 1] = line
  end
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  return table.concat(lines, "\n", math.max(1, #lines - n + 1))
end

-- Waits for output matching the Lua pattern; consumes output up to the end
-- of the match and returns the match (or its captures).
-- Returns nil, "timeout" | "ended" when it cannot match.
function Console:expect(pattern, timeout)
  local found
  local ok = self.changed.wait(function()
    found = table.pack(self.pending:find(pattern))
    return found[1] ~= nil or self.ended
  end, timeout)
  if not found[1] then return nil, ok and "ended" or "timeout" end
  local text = self.pending
  self.pending = text:sub(found[2] + 1)
  if found.n > 2 then return table.unpack(found, 3, found.n) end
  return text:sub(found[1], found[2])
end

function Console:send(text)
  if not self.stream or self.ended then return nil, "the console is closed" end
  return self.stream:write(text)
end

return console
