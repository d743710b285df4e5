-- make install and make uninstall into a temporary DESTDIR: the executable,
-- every Lua module (subfolders too), core.so, the man page and the bash and
-- zsh completions; the installed vmlua runs from there, help() included.
-- And the bash completion itself: commands, options, instance names.
local helpers = require "support.helpers"

local q = helpers.shell_quote
local BUILD = (os.getenv("VMLUA_BIN") or "build/bin/vmlua"):match("^(.*)/bin/vmlua$") or "build"

local lines, sh = helpers.sorted_lines, helpers.sh

describe("make install", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(dir) end)

  it("installs everything under PREFIX, and make uninstall removes it all", function()
    local make = "make -s BUILD=" .. q(BUILD) .. " DESTDIR=" .. q(dir) .. " PREFIX=/opt/vmlua "
    local ok, out = sh(make .. "install")
    assert(ok, out)
    local root = dir .. "/opt/vmlua"
    local expected = { "bin/vmlua", "lib/lua/5.4/vmlua/core.so", "share/man/man1/vmlua.1",
                       "share/bash-completion/completions/vmlua", "share/zsh/site-functions/_vmlua" }
    for _, file in ipairs(lines("cd lua && find vmlua -name '*.lua'")) do
      expected[#expected + 1] = "share/lua/5.4/" .. file
    end
    table.sort(expected)
    assert.are.same(expected, lines("cd " .. q(root) .. " && find . -type f | sed 's|^\\./||'"))
    assert.matches("vmlua/instance/store.lua", table.concat(expected, " "), 1, true)

    -- it runs from anywhere, and help() reads the installed modules
    ok, out = sh("cd / && " .. q(root .. "/bin/vmlua") .. [[ -e 'help "start"']])
    assert(ok, out)
    assert.matches("^vm:start%(%[opts%]%)\n  Starts QEMU", out)
    assert.matches("/opt/vmlua/share/lua/5.4/vmlua/init.lua", select(2,
      sh(q(root .. "/bin/vmlua") .. [[ -e 'print(package.searchpath("vmlua", package.path))']])), 1, true)

    ok, out = sh("man -l " .. q(root .. "/share/man/man1/vmlua.1") .. " 2>&1 | cat")
    assert(ok, out)
    assert.matches("VMLUA_RUNTIME_DIR", out, 1, true)

    ok, out = sh(make .. "uninstall")
    assert(ok, out)
    assert.are.same({}, lines("find " .. q(dir) .. " -type f"))
  end)
end)

describe("the shell completions", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(dir) end)

  -- What bash completes for the words of a command line (the last is the
  -- word being typed), with the runtime and state directories under dir.
  local function complete(...)
    local words = { "vmlua", ... }
    local quoted = {}
    for i, w in ipairs(words) do quoted[i] = q(w) end
    local script = string.format([[
cd %s/cwd
source %s
COMP_WORDS=(%s); COMP_CWORD=%d
_vmlua
printf '%%s\n' "${COMPREPLY[@]}" | sort]], q(dir), q(require("lfs").currentdir() .. "/completion/vmlua.bash"),
      table.concat(quoted, " "), #words - 1)
    helpers.write(dir .. "/complete.sh", script)
    local env = "VMLUA_RUNTIME_DIR=" .. q(dir .. "/run") .. " XDG_STATE_HOME=" .. q(dir .. "/state")
    local ok, out = sh(env .. " bash " .. q(dir .. "/complete.sh"))
    assert(ok, out)
    local got = {}
    for line in out:gmatch("[^\n]+") do got[#got + 1] = line end
    return got
  end

  it("complete commands, options, files and the names of instances in bash", function()
    assert(os.execute("mkdir -p " .. q(dir .. "/run/running-1") .. " " .. q(dir .. "/state/vmlua/kept-1") ..
                      " " .. q(dir .. "/cwd/scripts")))
    helpers.write(dir .. "/state/vmlua/history", "")
    helpers.write(dir .. "/cwd/dev.lua", "")
    assert.are.same({ "start", "stop" }, complete("st"))
    assert.are.same({ "dev.lua" }, complete("de"))
    local options = complete("-")
    for _, o in ipairs { "-e", "-l", "-i", "-q", "-v", "-h", "--help", "--version" } do
      assert.is_truthy(table.concat(options, " "):find(o, 1, true), o)
    end
    assert.are.same({ "kept-1", "running-1" }, complete("stop", ""))
    assert.are.same({ "kept-1", "running-1" }, complete("-q", "attach", ""))
    assert.are.same({ "running-1" }, complete("rm", "r"))
    assert.are.same({ "--force", "--help", "--timeout" }, complete("stop", "--"))
    assert.are.same({ "--help", "--json" }, complete("ls", "--"))
  end)

  it("are valid zsh too", function()
    if not os.execute("command -v zsh >/dev/null") then
      pending("zsh is not installed")
      return
    end
    local ok, out = sh("zsh -n completion/_vmlua")
    assert(ok, out)
  end)
end)
