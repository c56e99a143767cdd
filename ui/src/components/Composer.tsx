import { useEffect, useRef, useState } from "preact/hooks";
import { SendIcon, StopIcon } from "./icons";

interface Props {
  streaming: boolean;
  disabled: boolean;
  onSend: (text: string) => void;
  onStop: () => void;
}

const ROWS_HEIGHT_MAX_PX = 240;

export function Composer({ streaming, disabled, onSend, onStop }: Props) {
  const [text, setText] = useState("");
  const area = useRef<HTMLTextAreaElement>(null);

  useEffect(() => {
    // Grow with the text up to a limit, then scroll inside.
    const el = area.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, ROWS_HEIGHT_MAX_PX)}px`;
  }, [text]);

  const submit = () => {
    if (streaming || disabled || !text.trim()) return;
    onSend(text);
    setText("");
  };

  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      <label for="prompt" class="sr-only">
        Message
      </label>
      <textarea
        id="prompt"
        ref={area}
        rows={1}
        placeholder="Send a message"
        value={text}
        onInput={(e) => setText(e.currentTarget.value)}
        onKeyDown={(e) => {
          // isComposing: Enter also confirms an IME composition, which must not send.
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            submit();
          }
        }}
      />
      {streaming ? (
        <button type="button" class="send stop" aria-label="Stop generating" onClick={onStop}>
          <StopIcon />
        </button>
      ) : (
        <button type="submit" class="send" aria-label="Send message" disabled={disabled || !text.trim()}>
          <SendIcon />
        </button>
      )}
    </form>
  );
}
