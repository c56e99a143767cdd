/** Inline SVG icons: no icon font and no glyphs that a system font may lack. */

interface IconProps {
  path: string;
  size?: number;
}

function Icon({ path, size = 16 }: IconProps) {
  return (
    <svg
      width={size}
      height={size}
      viewBox="0 0 24 24"
      fill="none"
      stroke="currentColor"
      stroke-width="2"
      stroke-linecap="round"
      stroke-linejoin="round"
      aria-hidden="true"
      focusable="false"
    >
      <path d={path} />
    </svg>
  );
}

export const PlusIcon = () => <Icon path="M12 5v14M5 12h14" />;
export const PencilIcon = () => <Icon path="M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4" size={14} />;
export const TrashIcon = () => <Icon path="M4 7h16M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3" size={14} />;
export const MenuIcon = () => <Icon path="M4 6h16M4 12h16M4 18h16" size={20} />;
export const CloseIcon = () => <Icon path="M6 6l12 12M18 6L6 18" />;
export const ChevronIcon = () => <Icon path="M9 6l6 6-6 6" size={14} />;
export const SendIcon = () => <Icon path="M12 19V5M5 12l7-7 7 7" size={18} />;
export const StopIcon = () => (
  <svg width="14" height="14" viewBox="0 0 24 24" aria-hidden="true" focusable="false">
    <rect x="4" y="4" width="16" height="16" rx="2" fill="currentColor" />
  </svg>
);
