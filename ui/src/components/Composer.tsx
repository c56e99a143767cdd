import { useEffect, useRef, useState } from "preact/hooks";
import { IMAGES_SENT_MAX } from "../request";
import { SendIcon, StopIcon } from "./icons";

interface Props {
  streaming: boolean;
  disabled: boolean;
  /** The model reads images: the attach control, paste and drop are offered. */
  vision: boolean;
  /** Images the conversation already holds (past IMAGES_SENT_MAX, the oldest are not sent). */
  imagesHeld: number;
  onSend: (text: string, images: string[]) => void;
  onStop: () => void;
}

const ROWS_HEIGHT_MAX_PX = 240;
// What the server reads (docs/images.md): what mtmd decodes, and WebP, which the host decodes.
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"];

function readAsDataUrl(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export function Composer({ streaming, disabled, vision, imagesHeld, onSend, onStop }: Props) {
  const [text, setText] = useState("");
  const [images, setImages] = useState<string[]>([]);
  const [notice, setNotice] = useState("");
  const area = useRef<HTMLTextAreaElement>(null);
  const picker = useRef<HTMLInputElement>(null);

  useEffect(() => {
    // Grow with the text up to a limit, then scroll inside.
    const el = area.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, ROWS_HEIGHT_MAX_PX)}px`;
  }, [text]);

  useEffect(() => {
    if (!vision) setImages([]); // a model without vision gets none
  }, [vision]);

  const attach = async (files: File[]) => {
    if (!vision) return;
    const wanted = files.filter((f) => IMAGE_TYPES.includes(f.type));
    setNotice(wanted.length < files.length ? "Only PNG, JPEG, WebP, GIF and BMP images can be attached." : "");
    const urls = await Promise.all(wanted.map(readAsDataUrl));
    setImages((held) => {
      const all = [...held, ...urls];
      if (all.length > IMAGES_SENT_MAX) setNotice(`At most ${IMAGES_SENT_MAX} images per message.`);
      return all.slice(0, IMAGES_SENT_MAX);
    });
  };

  const submit = () => {
    if (streaming || disabled || !text.trim()) return;
    onSend(text, images);
    setText("");
    setImages([]);
    setNotice("");
  };

  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
      onDragOver={(e) => {
        if (vision) e.preventDefault(); // allows the drop
      }}
      onDrop={(e) => {
        if (!vision) return;
        e.preventDefault();
        void attach(Array.from(e.dataTransfer?.files ?? []));
      }}
    >
      {images.length > 0 && (
        <ul class="attachments" aria-label="Attached images">
          {images.map((url, i) => (
            <li key={i}>
              <img src={url} alt={`Attached image ${i + 1}`} class="thumbnail" />
              <button
                type="button"
                class="remove"
                aria-label={`Remove image ${i + 1}`}
                onClick={() => setImages((held) => held.filter((_, j) => j !== i))}
              >
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
      {notice && (
        <p class="muted attach-notice" role="status">
          {notice}
        </p>
      )}
      {vision && imagesHeld + images.length > IMAGES_SENT_MAX && (
        <p class="muted attach-notice images-bound">
          Only the latest {IMAGES_SENT_MAX} images of this chat are sent to the model; earlier ones stay here.
        </p>
      )}
      {vision && (
        <>
          <input
            ref={picker}
            type="file"
            accept={IMAGE_TYPES.join(",")}
            multiple
            hidden
            aria-label="Image files"
            onChange={(e) => {
              void attach(Array.from(e.currentTarget.files ?? []));
              e.currentTarget.value = "";
            }}
          />
          <button type="button" class="attach" aria-label="Attach images" onClick={() => picker.current?.click()}>
            +
          </button>
        </>
      )}
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
        onPaste={(e) => {
          const files = Array.from(e.clipboardData?.files ?? []);
          if (vision && files.length > 0) {
            e.preventDefault();
            void attach(files);
          }
        }}
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
