// The one quote-aware splitter: `einhorn sh` scripts (-e 'cmd; cmd', typed
// lines) and --reexec-as command lines are split by the same rules, those of
// a POSIX shell for simple words.

/** One request as the user wrote it. `text` is the source, for messages. */
export interface ScriptCommand {
  command: string;
  args: string[];
  text: string;
}

/** Text that cannot be split into commands (an unterminated quote). */
export class ScriptError extends Error {
  override name = "ScriptError";
}

/**
 * Split a script into commands. Commands are separated by `;` or a newline;
 * words by whitespace. Like a POSIX shell: '...' is taken literally, "..."
 * allows \" and \\ (other backslashes are kept), and a backslash outside quotes
 * makes the next character ordinary (so `\;` is a literal semicolon). A `#` that
 * starts a word comments out the rest of the line. Empty commands are dropped.
 */
export function parseScript(script: string): ScriptCommand[] {
  const commands: ScriptCommand[] = [];
  let words: string[] = [];
  let word = "";
  let inWord = false; // true once the current word has begun (even as "" from quotes)
  let start = 0;

  const endWord = () => {
    if (inWord) words.push(word);
    word = "";
    inWord = false;
  };
  const endCommand = (end: number) => {
    endWord();
    if (words.length) commands.push({ command: words[0]!, args: words.slice(1), text: script.slice(start, end).trim() });
    words = [];
    start = end + 1;
  };

  let i = 0;
  while (i < script.length) {
    const ch = script[i]!;
    if (ch === ";" || ch === "\n") {
      endCommand(i);
      i++;
    } else if (ch === " " || ch === "\t" || ch === "\r") {
      endWord();
      i++;
    } else if (ch === "#" && !inWord) {
      const nl = script.indexOf("\n", i);
      if (nl < 0) break;
      i = nl; // the newline itself ends the command
    } else if (ch === "'") {
      const close = script.indexOf("'", i + 1);
      if (close < 0) throw new ScriptError(`unterminated ' quote starting at character ${i + 1}: ${excerpt(script, i)}`);
      word += script.slice(i + 1, close);
      inWord = true;
      i = close + 1;
    } else if (ch === '"') {
      let j = i + 1;
      for (;;) {
        if (j >= script.length) throw new ScriptError(`unterminated " quote starting at character ${i + 1}: ${excerpt(script, i)}`);
        const c = script[j]!;
        if (c === '"') break;
        if (c === "\\" && (script[j + 1] === '"' || script[j + 1] === "\\")) {
          word += script[j + 1];
          j += 2;
        } else {
          word += c;
          j++;
        }
      }
      inWord = true;
      i = j + 1;
    } else if (ch === "\\") {
      if (i + 1 >= script.length) throw new ScriptError("a backslash at the end of the text escapes nothing");
      // A backslash before a newline joins lines, as in sh.
      if (script[i + 1] !== "\n") { word += script[i + 1]; inWord = true; }
      i += 2;
    } else {
      word += ch;
      inWord = true;
      i++;
    }
  }
  endCommand(script.length);
  return commands;
}

function excerpt(s: string, at: number): string {
  const piece = s.slice(at, at + 30);
  return JSON.stringify(piece.length < s.length - at ? `${piece}...` : piece);
}

/**
 * Split one command line (--reexec-as) into words. It must be a single
 * command: an unquoted `;` or newline would make it several.
 */
export function shellSplit(line: string): string[] {
  const commands = parseScript(line);
  if (commands.length > 1) throw new ScriptError(`one command was expected, got ${commands.length} (quote the ';' or newline that belongs to it): ${JSON.stringify(line)}`);
  const c = commands[0];
  return c ? [c.command, ...c.args] : [];
}
