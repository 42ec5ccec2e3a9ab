/* The rule editor: CodeMirror 5 over the page's textarea, errors underlined as you type, completion.
 *
 * Without this file the page is a textarea and its buttons post the form: everything works,
 * checked on submit. With it, each pause in typing posts the draft to the console's validate
 * endpoint (the same loader, schema and compiler as reload) and underlines each error at its
 * line and column, with the message and hint on hover; Ctrl-Space (and typing a word) offers
 * keys, operators, event types, Jinja filters and the attribute names Hana really sent.
 * Text from Hana (example values) is only ever set as text, never as HTML.
 */
(function () {
  "use strict";
  var area = document.getElementById("rule-text");
  if (!area || !window.CodeMirror) { return; }
  var form = area.form;
  var csrf = form.querySelector("input[name=csrf_token]").value;
  var status = document.getElementById("lint-status");
  var words = null;

  fetch(area.dataset.vocabularyUrl, {credentials: "same-origin"})
    .then(function (answer) { return answer.ok ? answer.json() : null; })
    .then(function (found) { words = found; })
    .catch(function () { words = null; });

  function path() {
    var name = form.querySelector("input[name=name]");
    return (name && name.value) || area.dataset.path;
  }

  function place(cm, found, severity) {
    var line = Math.max(0, Math.min((found.line || 1) - 1, cm.lineCount() - 1));
    var text = cm.getLine(line);
    var ch = Math.max(0, Math.min((found.column || 1) - 1, text.length));
    var key = /^(-\s+)?[\w-]+:\s*(?=\S)/.exec(text.slice(ch));
    if (key) { ch += key[0].length; }  // an error named at a key underlines the key's value
    var end = ch;
    while (end < text.length && !/[\s,:\]}#]/.test(text.charAt(end))) { end += 1; }
    if (end === ch) { end = Math.min(text.length, ch + 1); if (end === ch && ch > 0) { ch -= 1; } }
    var where = found.path ? found.path + ": " : "";
    var message = (found.rule ? "[" + found.rule + "] " : "") + where + found.message + (found.hint ? "\n→ " + found.hint : "");
    return {from: CodeMirror.Pos(line, ch), to: CodeMirror.Pos(line, end), message: message, severity: severity};
  }

  /* Each mistake also in words under the editor: a phone has no hover, a screen reader no underline. */
  var list = document.getElementById("lint-list");
  function listed(found) {
    if (!list) { return; }
    list.textContent = "";
    found.slice(0, 20).forEach(function (entry) {
      var line = document.createElement("li");
      var where = document.createElement("code");
      where.textContent = (entry.file || path()) + ":" + entry.line + ":" + entry.column;
      line.appendChild(where);
      line.appendChild(document.createTextNode(" " + (entry.rule ? "[" + entry.rule + "] " : "") + entry.message +
        (entry.hint ? " → " + entry.hint : "")));
      list.appendChild(line);
    });
  }

  var shown = [];
  function validate(text, done, options, cm) {
    fetch(area.dataset.validateUrl, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify({path: path(), text: text})
    }).then(function (answer) {
      if (answer.status === 429) {  // the server checks one draft at a time: keep the marks, ask again soon
        setTimeout(function () { cm.performLint(); }, 700);
        return null;
      }
      return answer.json();
    }).then(function (answer) {
      if (answer === null) { done(shown); return; }
      var mine = function (found) { return !found.file || found.file === path(); };
      var errors = (answer.errors || []).filter(mine);
      var warnings = (answer.warnings || []).filter(mine);
      var elsewhere = (answer.errors || []).length - errors.length;
      shown = errors.map(function (found) { return place(cm, found, "error"); })
        .concat(warnings.map(function (found) { return place(cm, found, "warning"); }));
      done(shown);
      if (status) {
        status.textContent = answer.summary || "";
        status.className = "lint-status " + (errors.length || elsewhere ? "bad" : warnings.length ? "warn" : "good");
        listed(errors.concat(warnings).concat((answer.errors || []).filter(function (f) { return !mine(f); })));
      }
    }).catch(function () { done([]); });
  }

  /* Enter indents as YAML wants the next line: under a list item's first key (`- field: x` → the
   * next key aligns with `field`), one level deeper after a key that opens a block (`when:`). */
  function newLineIndented(cm) {
    var cursor = cm.getCursor();
    var before = cm.getLine(cursor.line).slice(0, cursor.ch);
    var item = /^(\s*)-\s+(?=\S)/.exec(before);
    var indent = item ? item[0].length : /^\s*/.exec(before)[0].length;
    if (/:\s*$/.test(before)) { indent += 2; }
    cm.replaceSelection("\n" + new Array(indent + 1).join(" "), "end");
  }

  var editor = CodeMirror.fromTextArea(area, {
    mode: "yaml", lineNumbers: true, indentUnit: 2, tabSize: 2, lineWrapping: false,
    gutters: ["CodeMirror-lint-markers"],
    extraKeys: {
      "Ctrl-Space": "autocomplete",
      Tab: function (cm) { cm.replaceSelection("  "); },
      Enter: newLineIndented
    },
    lint: {getAnnotations: validate, async: true, delay: 600}
  });
  editor.getWrapperElement().setAttribute("aria-label", area.getAttribute("aria-label") || "YAML");

  /* Leaving with changes not saved asks first; the form's own buttons (check, try, save…) post the draft. */
  var opened = editor.getValue();
  var posting = false;
  form.addEventListener("submit", function () { editor.save(); posting = true; });
  window.addEventListener("pageshow", function () { posting = false; });
  window.addEventListener("beforeunload", function (event) {
    if (!posting && editor.getValue() !== opened) { event.preventDefault(); event.returnValue = ""; }
  });

  /* Completion ------------------------------------------------------------------------------- */

  function item(text, kind, detail, examples, insert) {
    return {
      text: insert || text, displayText: text,
      render: function (element) {
        var name = document.createElement("span");
        name.className = "hint-name";
        name.textContent = text;
        element.appendChild(name);
        var about = document.createElement("span");
        about.className = "hint-kind";
        about.textContent = " " + kind + (detail ? " · " + detail : "");
        element.appendChild(about);
        if (examples && examples.length) {
          var seen = document.createElement("span");
          seen.className = "hint-examples";
          seen.textContent = " " + examples.join(", ");
          element.appendChild(seen);
        }
      }
    };
  }

  function candidates(line, before) {
    if (!words) { return []; }
    var types = words.labels.types || {};
    var attributes = (words.attributes || []).map(function (a) {
      return item(a.name, types[a.type] || a.type || "", a.count + "×", a.examples);
    });
    var context = (words.context || []).map(function (name) { return item(name, words.labels.context); });
    var operand = /^\s*(-\s+)?(equals|not_equals|in|not_in|contains|not_contains|contains_any|contains_all|starts_with|ends_with|from|to):\s*["']?[^"']*$/.exec(before);
    if (operand && line.field) {
      var known = (words.attributes || []).filter(function (a) { return a.name === line.field; })[0];
      if (known && known.examples.length) {
        return known.examples.map(function (value) { return item(value, words.labels.example); });
      }
    }
    if (/\|\s*[\w]*$/.test(before) && /{{|{%/.test(before)) {
      return words.filters.map(function (name) { return item(name, words.labels.filter); });
    }
    if (/^\s*(-\s+)?on:\s*(\[.*)?[\w.*]*$/.test(before) || /^\s*-\s+[\w.*]*$/.test(before) && /on:\s*$/.test(line.previous)) {
      return words.events.map(function (name) { return item(name, words.labels.event); });
    }
    if (/(field|changed):\s*["']?[\w.]*$/.test(before) || /(lead|opportunity)\.[\w]*$/.test(before) || /{{[^}]*$/.test(before)) {
      return attributes.concat(context);
    }
    if (line.writes && /^\s*[\w]*$/.test(before)) {  // the attributes a hana_update writes, as keys
      return (words.attributes || []).filter(function (a) { return a.name.indexOf(line.writes + ".") === 0; })
        .map(function (a) {
          var name = a.name.slice(line.writes.length + 1);
          return item(name, types[a.type] || a.type || "", a.count + "×", a.examples, name + ": ");
        });
    }
    if (/^\s*(-\s+)?\{?[\w]*$/.test(before) || /[{,]\s*[\w]*$/.test(before)) {
      var asKey = function (label) { return function (name) { return item(name, label, "", null, name + ": "); }; };
      var keys = words.keys.map(asKey(words.labels.key));
      var operators = words.operators.map(asKey(words.labels.operator))
        .concat(words.modifiers.map(asKey(words.labels.modifier)));
      return line.inCondition ? operators.concat(keys) : keys.concat(operators);
    }
    return attributes;
  }

  function hint(cm) {
    var cursor = cm.getCursor();
    var text = cm.getLine(cursor.line);
    var before = text.slice(0, cursor.ch);
    var start = cursor.ch;
    while (start > 0 && /[\w.*\-]/.test(text.charAt(start - 1))) { start -= 1; }
    var typed = text.slice(start, cursor.ch).toLowerCase();
    var line = {previous: cursor.line > 0 ? cm.getLine(cursor.line - 1) : "", field: null, inCondition: false,
                writes: null};
    /* Under `hana_update:` → `lead:` (or `opportunity:`), keys are the entity's attributes. */
    var indent = /^\s*/.exec(text)[0].length;
    for (var up = cursor.line - 1; up >= 0 && up > cursor.line - 40; up -= 1) {
      var above = cm.getLine(up);
      if (!above.trim() || /^\s*#/.test(above)) { continue; }
      if (/^\s*/.exec(above)[0].length < indent) {
        var owner = /^\s*(lead|opportunity|ticket):\s*$/.exec(above);
        if (owner && up > 0 && /hana_update:\s*$/.test(cm.getLine(up - 1))) {
          line.writes = owner[1] === "ticket" ? "opportunity" : owner[1];
        }
        break;
      }
    }
    /* The condition the cursor is in: the nearest `field:`/`changed:` above, at this item's level. */
    for (var above = cursor.line; above >= 0 && above > cursor.line - 8; above -= 1) {
      var seen = /^\s*(-\s+)?(field|changed):\s*["']?([\w.]+)/.exec(cm.getLine(above));
      if (seen) { line.field = seen[3]; line.inCondition = true; break; }
      if (above < cursor.line && /^\s*-\s/.test(cm.getLine(above))) { break; }
    }
    var list = candidates(line, before).filter(function (entry) {
      var name = entry.text.toLowerCase();
      return !typed || (name.indexOf(typed) === 0 || name.indexOf(typed) > -1 && typed.length > 2) && name !== typed;
    });
    return {list: list.slice(0, 60), from: CodeMirror.Pos(cursor.line, start), to: CodeMirror.Pos(cursor.line, cursor.ch)};
  }

  editor.setOption("hintOptions", {hint: hint, completeSingle: false});
  editor.on("inputRead", function (cm, change) {
    if (change.origin !== "+input" || cm.state.completionActive) { return; }
    if (/[\w.]/.test(change.text[change.text.length - 1].slice(-1))) {
      cm.showHint({hint: hint, completeSingle: false});
    }
  });
}());
