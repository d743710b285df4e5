-- A VM's console: everything the guest prints is logged, kept for expect(),
-- and optionally shown on the terminal; send() types into it.
--
-- Output is kept as lists of chunks, joined only when read, so that a guest
-- flooding its console costs vmlua little. expect() scans only the new output
-- (plus an overlap as long as the pattern's longest match) when the pattern's
-- matches have a bounded length; other patterns are rescanned whole, but
-- only once the output has grown by an eighth, or SETTLE seconds later.
local core = require "vmlua.core"
local task = require "vmlua.task"

local console = {
  TAIL_BYTES = 64 * 1024,       -- recent output kept for error messages
  LINE_BYTES = 400,             -- of a line in error messages
  PENDING_BYTES = 1024 * 1024,  -- unmatched output kept for expect() while nothing reads
  LOG_BYTES = 1024 * 1024,      -- a rotated log moves to LOG.1 at this size
  SETTLE = 0.05,                -- a deferred rescan of the whole output waits at most this
  FLUSH = 0.02,                 -- the log reaches its file at most this late
  GATHER = 0.005,               -- a read of fewer than GATHER_BELOW bytes
  GATHER_BELOW = 4096,          -- makes the next wait GATHER seconds, unless
  GATHER_FULL = 32 * 1024,      -- three gathered reads in a row got this much (half the FIFO)
  EAGER = 0.05,                 -- in the last EAGER seconds
}

-- A byte queue: chunks [first..last], positions counted from the console's
-- first byte, so a scan can go on from where it stopped.
local Queue = {}
Queue.__index = Queue

local function queue()
  return setmetatable({ first = 1, last = 0, start = 1, stop = 1 }, Queue)
end

function Queue:push(s)
  self.last = self.last + 1
  self[self.last] = s
  self.stop = self.stop + #s
end

function Queue:size() return self.stop - self.start end

-- Drops the bytes before position p.
function Queue:drop(p)
  while self.first <= self.last and self.start + #self[self.first] <= p do
    self.start = self.start + #self[self.first]
    self[self.first] = nil
    self.first = self.first + 1
  end
  if self.first > self.last then
    self.first, self.last, self.start = 1, 0, self.stop
  elseif p > self.start then
    self[self.first] = self[self.first]:sub(p - self.start + 1)
    self.start = p
  end
end

-- The bytes from position p to the end. Reading all of them joins the
-- chunks into one, so that a second read costs nothing; reading a part
-- copies only that part.
function Queue:text(p)
  if p < self.start then p = self.start end
  local k, at = self.last, self.stop
  while k >= self.first and at > p do
    k = k - 1
    at = at - #self[k + 1]
  end
  k = k + 1 -- chunks k..last hold p..stop; chunk k starts at `at`
  if k > self.last then return "" end
  if p == self.start then
    if k < self.last then
      local s = table.concat(self, "", k, self.last)
      for j = k + 1, self.last do self[j] = nil end
      self[k], self.last = s, k
    end
    return self[k]
  end
  local head = p == at and self[k] or self[k]:sub(p - at + 1)
  if k == self.last then return head end
  return head .. table.concat(self, "", k + 1, self.last)
end

-- Lua patterns: what a pattern can match. Returns
--   { max = longest match in bytes (nil: unbounded), anchored = boolean }
-- or nil and Lua's own complaint about a malformed pattern (checked for the
-- whole pattern, where string.find stops at the first mismatch).
function console.pattern(p)
  if type(p) ~= "string" then return nil, "a pattern must be a string" end
  local n, i, max, open, closed = #p, 1, 0, {}, 0
  local info = { anchored = p:sub(1, 1) == "^" }
  if info.anchored then i = 2 end
  local function class_end(j) -- j at a single-character class; returns the index after it
    local c = p:sub(j, j)
    if c == "%" then
      if j >= n then error("malformed pattern (ends with '%')", 0) end
      return j + 2
    elseif c == "[" then
      j = j + 1
      if p:sub(j, j) == "^" then j = j + 1 end
      repeat -- the first character of a set is itself, even "]"
        if j > n then error("malformed pattern (missing ']')", 0) end
        local ch = p:sub(j, j)
        j = j + 1
        if ch == "%" then
          if j > n then error("malformed pattern (missing ']')", 0) end
          j = j + 1
        end
      until p:sub(j, j) == "]"
      return j + 1
    end
    return j + 1
  end
  local ok, err = pcall(function()
    while i <= n do
      local c, d = p:sub(i, i), p:sub(i + 1, i + 1)
      if c == "(" then
        if d == ")" then i = i + 2 else open[#open + 1] = true i = i + 1 end
      elseif c == ")" then
        if #open == 0 then error("invalid pattern capture", 0) end
        open[#open], closed, i = nil, closed + 1, i + 1
      elseif c == "$" and i == n then
        i = i + 1
      elseif c == "%" and d == "b" then
        if i + 3 > n then error("malformed pattern (missing arguments to '%b')", 0) end
        max, i = nil, i + 4
      elseif c == "%" and d == "f" then
        i = i + 2
        if p:sub(i, i) ~= "[" then error("missing '[' after '%f' in pattern", 0) end
        i = class_end(i)
      elseif c == "%" and d:match("%d") then
        local index = tonumber(d)
        if index < 1 or index > closed then error("invalid capture index %" .. d, 0) end
        max, i = nil, i + 2
      else
        i = class_end(i)
        local q = p:sub(i, i)
        if q == "*" or q == "+" or q == "-" then
          max, i = nil, i + 1
        else
          if q == "?" then i = i + 1 end
          if max then max = max + 1 end
        end
      end
    end
    if #open > 0 then error("unfinished capture", 0) end
  end)
  if not ok then return nil, err end
  local fine, why = pcall(string.find, "", p) -- anything the walk above missed
  if not fine then return nil, (tostring(why):gsub("^[^:]*:%d+: ", "")) end
  info.max = max
  return info
end

-- Console text made safe to show on a terminal (messages, errors, the
-- prompt, vm.serial views, a "stdio" console): escape sequences (CSI, OSC,
-- DCS and two-byte ones) are dropped, so that a guest's ESC[6n can never
-- make the terminal type its answer into the user's input; a line is what
-- follows its last carriage return; other control bytes show as ^X.
-- Printable text, newlines and tabs stay. Only vm:console() passes the
-- guest's bytes through as they are.
function console.printable(s)
  s = s:gsub("\27%[[\48-\63]*[\32-\47]*[\64-\126]", "")    -- CSI: ESC [ params final
       :gsub("\27[%]P_^X][^\7\27]*\7", "")                  -- OSC and strings, ended by BEL
       :gsub("\27[%]P_^X][^\27]*\27\\", "")                -- ... or by ESC \\
       :gsub("\27[\32-\47]*[\48-\126]", "")                 -- ESC c, ESC ( B, ESC 7, ...
       :gsub("\194[\128-\159]", "")                        -- C1 controls (UTF-8)
       :gsub("\r+\n", "\n")
       :gsub("[^\n]*\r", "")
       :gsub("[%c]", function(c)
         if c == "\n" or c == "\t" then return c end
         return "^" .. string.char(c:byte() ~ 64)
       end)
  return s
end

-- A printable() for a stream: returns fn(data) -> text, which holds back
-- an escape sequence cut off at the end of a chunk until the rest comes.
function console.printer()
  local held = ""
  return function(data)
    data = held .. data
    held = ""
    local at = data:find("[\27\194][^\27\194]*$")
    if at then
      local rest = data:sub(at)
      if #rest < 256 and (rest == "\27" or rest == "\194" or rest:find("^\27%[[\48-\63]*[\32-\47]*$")
                          or rest:find("^\27[%]P_^X][^\7]*$") or rest:find("^\27[\32-\47]+$")) then
        held, data = rest, data:sub(1, at - 1)
      end
    end
    return console.printable(data)
  end
end

-- opts: log (path), stdio (boolean), rotate (bytes: the log is a scratch
-- file that moves to LOG.1 at this size, and LOG.1 goes when the console
-- closes; the runtime directory's log, which goes with the VM)
function console.new(opts)
  local self = setmetatable({ recent = queue(), pending = queue(), keep = 0, changed = task.condition(),
                              stdio = opts.stdio, log_path = opts.log, rotate = opts.rotate }, console.Console)
  if opts.stdio then self.printer = console.printer() end
  if opts.log then
    local existed = core.stat(opts.log)
    self.log = assert(io.open(opts.log, "ab"))
    self.log:setvbuf("full", 64 * 1024)
    self.log_size = self.log:seek("end")
    -- A console can show secrets; a file that was there keeps its mode.
    if not existed then core.chmod(opts.log, tonumber("600", 8)) end
  end
  return self
end

local Console = {}
console.Console = Console
-- `tail`: the recent output as one string, printable (for messages and
-- the line vm:console() shows on attach); `raw_tail`: as the guest wrote it.
Console.__index = function(self, key)
  if key == "tail" then return console.printable(self.recent:text(self.recent.start)) end
  if key == "raw_tail" then return self.recent:text(self.recent.start) end
  return Console[key]
end

function Console:attach(stream)
  self.stream = stream
  stream:read(function(data)
    if not data then return self:_ended() end
    self:_output(data)
    -- QEMU writes the console a byte at a time, and a wake-up per byte costs
    -- more than the byte: after a short read, let the output gather in the
    -- FIFO for a moment. The FIFO holds 64 KiB, so when gathered reads keep
    -- coming near half that, QEMU may soon wait for vmlua: then read at once
    -- for a while.
    local now = core.now()
    if self.gathered then
      self.full = #data >= console.GATHER_FULL and (self.full or 0) + 1 or 0
      if self.full >= 3 then self.eager_until, self.full = now + console.EAGER, 0 end
    end
    self.gathered = false
    if #data < console.GATHER_BELOW and now >= (self.eager_until or 0) and not self.ended then
      stream:pause()
      self.gathering = core.timer(console.GATHER, 0, function()
        self.gathering, self.gathered = nil, true
        if not self.ended then stream:resume() end
      end)
    end
  end)
end

-- The log is written through a buffer. A short chunk that ends a line
-- (interactive output) is flushed at once, and so is any chunk when the
-- last flush was console.FLUSH seconds ago; otherwise the flush waits
-- until then: during a flood, one write(2) per console chunk (often a few
-- bytes) would cost more than everything else vmlua does with the chunk.
function Console:_flush_log()
  if self.flush_timer then self.flush_timer:close() self.flush_timer = nil end
  self.flushed_at = core.now()
  if self.log then self.log:flush() end
end

function Console:_write_log(data)
  self.log:write(data)
  local since = core.now() - (self.flushed_at or -math.huge)
  if since >= console.FLUSH or (#data < console.GATHER_BELOW and data:find("\n", 1, true)) then
    self:_flush_log()
  elseif not self.flush_timer then
    self.flush_timer = core.timer(console.FLUSH - since, 0, function()
      self.flush_timer = nil
      self:_flush_log()
    end)
  end
  if not self.rotate then return end
  self.log_size = self.log_size + #data
  if self.log_size < self.rotate then return end
  self.log:close()
  os.rename(self.log_path, self.log_path .. ".1")
  self.log = assert(io.open(self.log_path, "wb"))
  self.log:setvbuf("full", 64 * 1024)
  core.chmod(self.log_path, tonumber("600", 8))
  self.log_size = 0
end

-- fn(data) gets every byte of output from now on (a client of the VM's
-- console socket); returns a function that stops it.
function Console:watch(fn)
  self.watchers = self.watchers or {}
  self.watchers[fn] = true
  return function() self.watchers[fn] = nil end
end

function Console:_output(data)
  if self.log then self:_write_log(data) end
  for fn in pairs(self.watchers or {}) do fn(data) end
  if self.tee then self.tee(data) -- a terminal attached by vm:console()
  elseif self.stdio then io.stdout:write(self.printer(data)) io.stdout:flush() end
  local recent, pending = self.recent, self.pending
  recent:push(data)
  if recent:size() > 2 * console.TAIL_BYTES then recent:drop(recent.stop - console.TAIL_BYTES) end
  pending:push(data)
  if self.keep == 0 and pending:size() > 2 * console.PENDING_BYTES then
    pending:drop(pending.stop - console.PENDING_BYTES)
  end
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
  if self.flush_timer then self.flush_timer:close() self.flush_timer = nil end
  if self.gathering then self.gathering:close() self.gathering = nil end
  if self.log then self.log:close() self.log = nil end
  if self.rotate then os.remove(self.log_path .. ".1") end
end

-- The last n lines of output, printable (see console.printable); a line
-- longer than console.LINE_BYTES keeps its end.
function Console:last_lines(n)
  local lines = {}
  for line in (self.tail .. "\n"):gmatch("([^\n]*)\n") do
    if #line > console.LINE_BYTES then line = "..." .. line:sub(-console.LINE_BYTES) end
    lines[#lines + 1] = line
  end
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  return table.concat(lines, "\n", math.max(1, #lines - n + 1))
end

-- Waits until scan(quiet) returns true: true, or nil and "timeout" |
-- "ended". scan runs at once and then on each new output, inside the
-- console's callback (no task switch per chunk); when it returns "later",
-- it runs again with quiet = true at most console.SETTLE seconds on.
function Console:_wait(scan, timeout)
  local r = scan(self.ended)
  if r == true then return true end
  if self.ended and r ~= "later" then return nil, "ended" end
  local done, registered, settle = false, false, nil
  local ok, why = task.await(function(wake)
    local check
    local function arm(result)
      if result == "later" and not settle then
        settle = core.timer(console.SETTLE, 0, function() settle = nil check(true) end)
      end
      if not registered then
        registered = true
        self.changed.once(function() registered = false check(false) end)
      end
    end
    function check(quiet)
      if done then return end
      local result = scan(quiet or self.ended)
      if result == true then
        done = true
        wake(true)
      elseif self.ended and result ~= "later" then
        done = true
        wake(nil, "ended")
      else
        arm(result)
      end
    end
    arm(r)
    return function() done = true end
  end, timeout)
  done = true
  if settle then settle:close() end
  return ok, why
end

-- Waits for output matching the Lua pattern; consumes output up to the end
-- of the match and returns the match (or its captures).
-- Returns nil, "timeout" | "ended" when it cannot match.
function Console:expect(pattern, timeout)
  local info = assert(console.pattern(pattern))
  local q = self.pending
  local from = q.start      -- where a match can still start (bounded patterns)
  local scanned = -1        -- q.stop at the last whole scan (other patterns)
  local found, base, text
  local ok, why = self:_wait(function(quiet)
    if info.max and not info.anchored then
      if from < q.start then from = q.start end
      base = math.max(q.start, from - 1) -- one byte before, for %f
      text = q:text(base)
      found = table.pack(text:find(pattern, from - base + 1))
      if found[1] then return true end
      from = math.max(from, q.stop - info.max)
      return false
    end
    if q.stop == scanned then return false end
    local size = q:size()
    if not quiet and size > 64 * 1024 and (q.stop - scanned) * 8 < size then return "later" end
    scanned, base = q.stop, q.start
    text = q:text(base)
    found = table.pack(text:find(pattern))
    return found[1] ~= nil
  end, timeout)
  if not ok then return nil, why end
  q:drop(base + found[2])
  if found.n > 2 then return table.unpack(found, 3, found.n) end
  return text:sub(found[1], found[2])
end

-- Waits for the literal text `mark` and returns everything before it; that
-- and the mark are consumed. Output is kept whole while it waits, however
-- long it gets. Returns nil, "timeout" | "ended" when the mark does not come.
function Console:read_until(mark, timeout)
  local q = self.pending
  local from, at = q.start, nil
  self.keep = self.keep + 1
  local done, ok, why = pcall(self._wait, self, function()
    if from < q.start then from = q.start end
    local base = from
    at = q:text(base):find(mark, 1, true)
    if at then at = base + at - 1 return true end
    from = math.max(from, q.stop - #mark + 1)
    return false
  end, timeout)
  self.keep = self.keep - 1
  if not done then error(ok, 0) end -- interrupted
  if not ok then return nil, why end
  local before = q:text(q.start):sub(1, at - q.start)
  q:drop(at + #mark)
  return before
end

function Console:send(text)
  if not self.stream or self.ended then return nil, "the console is closed" end
  return self.stream:write(text)
end

return console
