-- vmlua.image{url=, sha256=} against a real HTTP server on 127.0.0.1
-- (tests/support/http_server.py, started and killed by each spec): a
-- download verified and cached by its sum, a resume with Range after a
-- dropped connection, a server that ignores Range, a wrong sum, a 404, and
-- the progress bar, shown on a terminal only.
local core = require "vmlua.core"
local helpers = require "support.helpers"
local host = require "vmlua.host"
local image = require "vmlua.image"
local lfs = require "lfs"
local pty = require "support.pty"
local task = require "vmlua.task"

local q = helpers.shell_quote

local function sha256_of(path)
  local p = assert(io.popen("sha256sum " .. q(path)))
  local sum = p:read("a"):match("^(%x+)")
  p:close()
  return sum
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function files_in(dir)
  return helpers.sorted_lines("ls -A " .. q(dir) .. " 2>/dev/null")
end

-- Starts the fixture server over dir/www; returns it with its port,
-- url(name), faults(table) (what it does wrong from now on), requests()
-- (its log since the last faults(), decoded) and close().
local function serve(dir)
  local log, control = dir .. "/requests.jsonl", dir .. "/control.json"
  local argv = { "python3", "tests/support/http_server.py", "--root", dir .. "/www", "--log", log,
                 "--control", control }
  local s = { out = "", err = "", changed = task.condition() }
  s.process = assert(core.spawn {
    file = assert(host.which("python3"), "python3 is missing"), args = argv,
    on_stdout = function(d) s.out = s.out .. d; s.changed.notify() end,
    on_stderr = function(d) s.err = s.err .. d; s.changed.notify() end,
    on_exit = function() s.exited = true; s.changed.notify() end,
  })
  function s.close() s.process:close() end -- kills it by its pid
  s.changed.wait(function() return s.out:find("\n") or s.exited end, 60)
  s.port = tonumber(s.out:match("^(%d+)\n"))
  if not s.port then
    s.close()
    error("the server did not start: " .. s.err)
  end
  function s.url(name) return string.format("http://127.0.0.1:%d/%s", s.port, name) end
  function s.faults(faults)
    helpers.write(control, next(faults) and core.json_encode(faults) or "{}")
    helpers.write(log, "")
  end
  function s.requests()
    local list = {}
    for line in (read(log) or ""):gmatch("[^\n]+") do list[#list + 1] = core.json_decode(line) end
    return list
  end
  return s
end

describe("vmlua.image", function()
  local spec_dir, server, dir, cache, data, sum
  local original_dir = image.dir

  setup(function()
    spec_dir = helpers.tmpdir()
    assert(os.execute("mkdir " .. q(spec_dir .. "/www")))
    server = serve(spec_dir)
  end)

  teardown(function()
    if server then server.close() end
    helpers.rmtree(spec_dir)
  end)

  before_each(function()
    dir = helpers.tmpdir()
    cache = dir .. "/cache/images"
    image.dir = function() return cache end
    server.faults {}
    -- 1 MiB that no two specs share
    local random = assert(io.open("/dev/urandom", "rb"))
    data = random:read(1048576)
    random:close()
    helpers.write(spec_dir .. "/www/disk.img", data)
    sum = sha256_of(spec_dir .. "/www/disk.img")
  end)

  after_each(function()
    image.dir = original_dir
    helpers.rmtree(dir)
  end)

  it("downloads an image, verifies it and keeps it under its sha256, with the URL beside it", function()
    local path = image.get { url = server.url("disk.img"), sha256 = sum:upper() }
    assert.are.equal(cache .. "/" .. sum, path)
    assert.is_true(read(path) == data)
    assert.are.equal(server.url("disk.img") .. "\n", read(path .. ".url"))
    assert.are.same({ sum, sum .. ".url" }, files_in(cache))
    local log = server.requests()
    assert.are.equal(1, #log)
    assert.are.equal(200, log[1].status)
  end)

  it("uses the cached image without a request, from any URL with that content", function()
    local first = image.get { url = server.url("disk.img"), sha256 = sum }
    local again = image.get { url = server.url("disk.img"), sha256 = sum }
    local other = image.get { url = server.url("elsewhere.img"), sha256 = sum }
    assert.are.equal(first, again)
    assert.are.equal(first, other)
    assert.are.equal(1, #server.requests())
  end)

  it("follows a redirect", function()
    local path = image.get { url = server.url("redirect/disk.img"), sha256 = sum }
    assert.is_true(read(path) == data)
    local log = server.requests()
    assert.are.same({ 302, 200 }, { log[1].status, log[2].status })
  end)

  it("resumes a dropped download with Range, and never takes the partial file for the image", function()
    server.faults { drop_after = 300000 }
    local url = server.url("disk.img")
    local ok, err = pcall(image.get, { url = url, sha256 = sum })
    assert.is_false(ok)
    assert.matches("image_spec.lua:%d+: vmlua.image: " .. url:gsub("%p", "%%%0") .. ": the download stopped", err)
    assert.matches("partial file .*%.part is kept", err)
    assert.is_nil(io.open(cache .. "/" .. sum))
    assert.are.equal(300000, #read(cache .. "/" .. sum .. ".part"))
    local path = image.get { url = url, sha256 = sum }
    assert.is_true(read(path) == data)
    assert.is_nil(io.open(path .. ".part"))
    local log = server.requests()
    assert.are.equal(2, #log)
    assert.is_not_string(log[1].range)
    assert.are.equal("bytes=300000-", log[2].range)
    assert.are.equal(206, log[2].status)
  end)

  it("starts over when the server ignores Range", function()
    server.faults { drop_after = 300000, ignore_range = true }
    local url = server.url("disk.img")
    assert.is_false(pcall(image.get, { url = url, sha256 = sum }))
    local path = image.get { url = url, sha256 = sum }
    assert.is_true(read(path) == data)
    local log = server.requests()
    assert.are.equal("bytes=300000-", log[2].range)
    assert.are.equal(200, log[2].status)
  end)

  it("starts over when the partial file is as long as the image (416)", function()
    assert(os.execute("mkdir -p " .. q(cache)))
    helpers.write(cache .. "/" .. sum .. ".part", string.rep("x", #data))
    local path = image.get { url = server.url("disk.img"), sha256 = sum }
    assert.is_true(read(path) == data)
    local log = server.requests()
    assert.are.same({ 416, 200 }, { log[1].status, log[2].status })
  end)

  it("deletes a download whose checksum is wrong, and names the URL and both sums", function()
    local url, wrong = server.url("disk.img"), string.rep("0", 64)
    local ok, err = pcall(image.get, { url = url, sha256 = wrong })
    assert.is_false(ok)
    assert.matches(url, err, 1, true)
    assert.matches("expected sha256 " .. wrong, err, 1, true)
    assert.matches("got " .. sum, err, 1, true)
    assert.are.same({}, files_in(cache))
  end)

  it("names the URL and the HTTP status of an error, and leaves nothing behind", function()
    local url = server.url("missing.img")
    local ok, err = pcall(image.get, { url = url, sha256 = sum })
    assert.is_false(ok)
    assert.matches(url .. ": the server answered HTTP 404", err, 1, true)
    assert.are.same({}, files_in(cache))
  end)

  it("says why when nothing answers", function()
    local url = "http://127.0.0.1:1/disk.img" -- nothing listens on port 1
    local ok, err = pcall(image.get, { url = url, sha256 = sum })
    assert.is_false(ok)
    assert.matches(url .. ": cannot download it: ", err, 1, true)
    assert.are.same({}, files_in(cache))
  end)

  it("goes on with the event loop while it downloads", function()
    server.faults { rate = 2000000 }
    local ticks, path = 0, nil
    local timer = core.timer(0.02, 0.02, function() ticks = ticks + 1 end)
    task.spawn(function() path = image.get { url = server.url("disk.img"), sha256 = sum } end)
    task.await(function(wake)
      local poll
      poll = core.timer(0.05, 0.05, function()
        if path then poll:close() wake() end
      end)
    end, 60)
    timer:close()
    assert.is_true(read(path) == data)
    assert.is_true(ticks > 0)
  end)

  it("verifies a local path or a file:// URL where it is, and never deletes it", function()
    local file = spec_dir .. "/www/disk.img"
    assert.are.equal(file, image.get { url = file, sha256 = sum })
    assert.are.equal(file, image.get { url = "file://" .. file, sha256 = sum })
    local ok, err = pcall(image.get, { url = file, sha256 = string.rep("a", 64) })
    assert.is_false(ok)
    assert.matches("expected sha256 " .. string.rep("a", 64) .. ", got " .. sum, err, 1, true)
    assert.is_true(read(file) == data)
    assert.are.same({}, files_in(cache))
  end)

  it("names the field and the caller's line of a wrong spec", function()
    local function err_of(spec)
      local ok, err = pcall(image.get, spec)
      assert.is_false(ok)
      return err
    end
    assert.matches("image_spec.lua:%d+: sha256: expected the image's SHA%-256 as 64 hex digits",
                   err_of { url = "http://127.0.0.1:1/x", sha256 = "abc" })
    assert.matches("image_spec.lua:%d+: url: expected a URL", err_of { sha256 = sum })
    assert.matches('image_spec.lua:%d+: sha: unknown field; did you mean "sha256"', err_of { url = "x", sha = sum })
    assert.matches("url: .*vmlua downloads http and https", err_of { url = "ftp://127.0.0.1/x", sha256 = sum })
  end)

  it("keeps what an interrupted download got, releases its lock, and resumes it", function()
    server.faults { rate = 400000 }
    local url, part = server.url("disk.img"), cache .. "/" .. sum .. ".part"
    local failure
    local co = task.spawn(function()
      local ok, err = pcall(image.get, { url = url, sha256 = sum })
      failure = ok and "it finished" or err
    end)
    -- wait until some of it is written, then interrupt it as Ctrl-C does
    task.await(function(wake)
      local poll
      poll = core.timer(0.05, 0.05, function()
        if (lfs.attributes(part, "size") or 0) > 0 then poll:close() wake() end
      end)
    end, 60)
    assert.is_true(task.interrupt(co, "interrupted"))
    assert.are.equal("interrupted", failure)
    local kept = lfs.attributes(part, "size")
    assert.is_true(kept > 0 and kept < #data)
    assert.is_nil(lfs.attributes(cache .. "/" .. sum .. ".lock"))
    server.faults {}
    local path = image.get { url = url, sha256 = sum }
    assert.is_true(read(path) == data)
    local log = server.requests()
    assert.are.equal(1, #log)
    assert.matches("^bytes=%d+%-$", log[1].range)
  end)

  it("waits for another vmlua that downloads the same image", function()
    local notice = require "vmlua.notice"
    assert(os.execute("mkdir -p " .. q(cache)))
    local other = assert(core.lock(cache .. "/" .. sum .. ".lock"))
    local path
    notice.quiet = true
    finally(function() notice.quiet = false; other:unlock() end)
    task.spawn(function() path = image.get { url = server.url("disk.img"), sha256 = sum } end)
    task.sleep(0.3)
    assert.is_nil(path)
    assert.are.equal(0, #server.requests())
    other:unlock()
    task.await(function(wake)
      local poll
      poll = core.timer(0.05, 0.05, function()
        if path then poll:close() wake() end
      end)
    end, 60)
    assert.is_true(read(path) == data)
  end)

  describe("core primitives", function()
    it("sha256 and sha256_file hash as sha256sum does, and sha256_file says why it cannot", function()
      assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.sha256(""))
      assert.are.equal(sum, core.sha256(data))
      assert.are.equal(sum, image.sha256(spec_dir .. "/www/disk.img"))
      local got, err = image.sha256(dir .. "/missing")
      assert.is_nil(got)
      assert.are.equal(dir .. "/missing: No such file or directory", err)
    end)

    it("download:close() cancels a transfer: no callback after it, the file keeps what came", function()
      server.faults { rate = 200000 }
      local file, done, progressed = dir .. "/out", false, 0
      local d
      task.await(function(wake)
        d = assert(core.download {
          url = server.url("disk.img"), path = file,
          on_progress = function(have, total)
            progressed = have
            assert.are.equal(#data, total)
            wake()
          end,
          on_done = function() done = true end,
        })
      end, 60)
      assert.is_true(d:active())
      d:close()
      d:close() -- twice is fine
      assert.is_false(d:active())
      assert.are.equal("download (closed)", tostring(d))
      task.sleep(0.3)
      assert.is_false(done)
      assert.is_true(progressed > 0)
      assert.is_true(lfs.attributes(file, "size") >= progressed)
    end)
  end)

  describe("from the executable", function()
    local function script(url)
      return helpers.write(dir .. "/fetch.lua", string.format(
        "local vmlua = require 'vmlua'\nprint(vmlua.image { url = %q, sha256 = %q })\n", url, sum))
    end
    local env_of = { "XDG_CACHE_HOME=" .. "", "VMLUA_CACHE=" }

    it("downloads into $XDG_CACHE_HOME/vmlua/images and draws no progress when stderr is not a terminal", function()
        local path = script(server.url("disk.img"))
      local out, err = {}, {}
      local code = task.await(function(wake)
        assert(core.spawn {
          file = "/usr/bin/env",
          args = { "env", "XDG_CACHE_HOME=" .. dir .. "/xdg", "VMLUA_CACHE=", pty.binary, path },
          on_stdout = function(d) out[#out + 1] = d end,
          on_stderr = function(d) err[#err + 1] = d end,
          on_exit = wake,
        })
      end)
      assert.are.equal("", table.concat(err))
      assert.are.equal(0, code)
      assert.are.equal(dir .. "/xdg/vmlua/images/" .. sum .. "\n", table.concat(out))
      assert.is_true(read(dir .. "/xdg/vmlua/images/" .. sum) == data)
    end)

    it("draws a progress bar on a terminal", function()
      server.faults { rate = 4000000 }
      local path = script(server.url("disk.img"))
      env_of[1] = "XDG_CACHE_HOME=" .. dir .. "/xdg"
      local term = pty.spawn({ path }, env_of)
      finally(function() term:close() end)
      term:expect("disk.img", 60)
      term:expect("100% [" .. string.rep("=", 30) .. "] 1.0/1.0 MiB", 60)
      term:expect(dir .. "/xdg/vmlua/images/" .. sum, 60)
      assert.are.equal(0, term:wait_exit(60))
    end)
  end)
end)
