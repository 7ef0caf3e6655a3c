// Package argocd runs Lua health checks and resource actions the way Argo CD v3.6 does
// (argo-cd util/lua/lua.go, util/lua/oslib_safe.go, gopher-lua v1.1.2 as in its go.mod): github.com/yuin/gopher-lua with the standard
// libraries skipped, then only package, base, table and a "safe" os (time and date) opened, os
// preloaded for require("os"), the object in the global `obj`, a one-second deadline, and the
// returned table converted through layeh.com/gopher-json as Argo CD does.
//
// Scripts from argocd-cm run this way unless `resource.customizations.useOpenLibs.<group_kind>`
// is true: no string, math or io library.
package argocd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch"
	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// Health is what a health script returns.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Action is one entry a discovery script returns.
type Action struct {
	Name     string
	Disabled bool
}

// The statuses Argo CD accepts; anything else becomes Unknown.
var validHealth = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

// Now is the clock of the safe os library (a test may fix it).
var Now = time.Now

func run(obj map[string]any, script string) (*lua.LState, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			l.Close()
			return nil, err
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	// Action parameters (none here: recur's actions take none), then the object.
	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", decodeValue(l, obj))
	fn, err := l.LoadString(script)
	if err == nil {
		l.Push(fn)
		err = l.PCall(0, lua.MultRet, nil)
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// HealthOf runs a health script on obj (ExecuteHealthLua).
func HealthOf(obj map[string]any, script string) (Health, error) {
	l, err := run(obj, script)
	if err != nil {
		return Health{}, err
	}
	defer l.Close()
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return Health{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	b, err := luajson.Encode(ret)
	if err != nil {
		return Health{}, err
	}
	var h Health
	if err := json.Unmarshal(b, &h); err != nil {
		return Health{}, err
	}
	if !validHealth[h.Status] {
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

// Discover runs a discovery script on obj (ExecuteResourceActionDiscovery).
func Discover(obj map[string]any, script string) (map[string]Action, error) {
	l, err := run(obj, script)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	b, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	out := map[string]Action{}
	if string(b) == "[]" {
		return out, nil
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for name, v := range m {
		a := Action{Name: name}
		if fields, ok := v.(map[string]any); ok {
			if d, ok := fields["disabled"].(bool); ok {
				a.Disabled = d
			}
		}
		out[name] = a
	}
	return out, nil
}

// Act runs an action script on obj and returns the object Argo CD would patch the live one to
// (ExecuteResourceAction for an old-style action returning the object, with cleanReturnedObj).
// Argo CD then sends the JSON merge patch from the live object to this one (MergePatch).
func Act(obj map[string]any, script string) (map[string]any, error) {
	l, err := run(obj, script)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	b, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("Lua output was not a JSON object: %w", err)
	}
	return cleanReturned(out, obj), nil
}

// cleanReturned undoes gopher-json's encoding of an empty table as [] where the input had {}.
func cleanReturned(newObj, obj map[string]any) map[string]any {
	for key, oldV := range obj {
		newV, ok := newObj[key]
		if !ok {
			continue
		}
		switch nv := newV.(type) {
		case map[string]any:
			if ov, ok := oldV.(map[string]any); ok {
				newObj[key] = cleanReturned(nv, ov)
			}
		case []any:
			switch ov := oldV.(type) {
			case map[string]any:
				if len(nv) == 0 {
					newObj[key] = ov
				}
			case []any:
				for i := range nv {
					if i >= len(ov) {
						break
					}
					if nm, ok := nv[i].(map[string]any); ok {
						if om, ok := ov[i].(map[string]any); ok {
							nv[i] = cleanReturned(nm, om)
						}
					}
				}
			}
		}
	}
	return newObj
}

// decodeValue converts a decoded JSON object to Lua values as Argo CD's decodeValue does.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(decodeValue(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetH(lua.LString(k), decodeValue(l, item))
		}
		return t
	}
	return lua.LNil
}

// The safe os library: time and date only, with Argo CD's behaviour (os.date("!fmt", t) formats
// t in local time: the "!" only applies to the current time).
var osFuncs = map[string]lua.LGFunction{"time": osTime, "date": osDate}

func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.OsLibName, osFuncs))
	return 1
}

func safeOsLoader(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), osFuncs))
	return 1
}

func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(Now().Unix()))
		return 1
	}
	tb := l.CheckTable(1)
	field := func(k string, def int) int {
		if n, ok := tb.RawGetString(k).(lua.LNumber); ok {
			return int(n)
		}
		return def
	}
	t := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(t.Unix()))
	return 1
}

func osDate(l *lua.LState) int {
	t := Now()
	format := "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
		if strings.HasPrefix(format, "!") {
			t = Now().UTC()
			format = strings.TrimLeft(format, "!")
		}
		if l.GetTop() >= 2 {
			t = time.Unix(l.CheckInt64(2), 0)
		}
		if strings.HasPrefix(format, "*t") {
			tb := l.NewTable()
			for k, v := range map[string]int{
				"year": t.Year(), "month": int(t.Month()), "day": t.Day(), "hour": t.Hour(),
				"min": t.Minute(), "sec": t.Second(), "wday": int(t.Weekday()) + 1, "yday": 0,
			} {
				tb.RawSetString(k, lua.LNumber(v))
			}
			tb.RawSetString("isdst", lua.LFalse)
			l.Push(tb)
			return 1
		}
	}
	l.Push(lua.LString(strftime(t, format)))
	return 1
}

var strftimeLayouts = map[byte]string{
	'a': "mon", 'A': "Monday", 'b': "Jan", 'B': "January", 'c': "02 Jan 06 15:04 MST", 'd': "02",
	'F': "2006-01-02", 'H': "15", 'I': "03", 'm': "01", 'M': "04", 'p': "PM", 'P': "pm", 'S': "05",
	'x': "15/04/05", 'X': "15:04:05", 'y': "06", 'Y': "2006", 'z': "-0700", 'Z': "MST",
}

func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i == len(format)-1 {
			b.WriteByte(c)
			continue
		}
		i++
		f := format[i]
		switch {
		case f == '%':
			b.WriteByte('%')
		case strftimeLayouts[f] != "":
			b.WriteString(t.Format(strftimeLayouts[f]))
		case f == 'w':
			fmt.Fprint(&b, int(t.Weekday()))
		default:
			b.WriteByte('%')
			b.WriteByte(f)
		}
	}
	return b.String()
}

// MergePatch is the patch Argo CD's API server sends for an action's result
// (jsonpatch.CreateMergePatch(live, new), applied as application/merge-patch+json).
func MergePatch(live, updated map[string]any) (string, error) {
	a, err := json.Marshal(live)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(updated)
	if err != nil {
		return "", err
	}
	p, err := jsonpatch.CreateMergePatch(a, b)
	return string(p), err
}
