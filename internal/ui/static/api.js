// api.js — data requests with the bearer token. The token is asked for once
// (a dialog), kept in sessionStorage for this tab and sent only as an
// Authorization header: never in a URL, where logs and history would keep it.

const KEY = 'dnms.token';
let token = sessionStorage.getItem(KEY) || '';
let asking = null;

export function hasToken() { return token !== ''; }

export function authHeaders(extra = {}) {
  const h = { ...extra };
  if (token) h.Authorization = 'Bearer ' + token;
  return h;
}

// askToken shows the token dialog and resolves once one was entered. Every
// caller waiting on a 401 shares one dialog.
export function askToken(message = '') {
  if (asking) return asking;
  const dlg = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  document.getElementById('token-error').textContent = message;
  asking = new Promise((resolve) => {
    const submit = (e) => {
      e.preventDefault();
      const v = input.value.trim();
      if (!v) return;
      token = v;
      sessionStorage.setItem(KEY, v);
      input.value = '';
      form.removeEventListener('submit', submit);
      dlg.close();
      asking = null;
      resolve();
    };
    form.addEventListener('submit', submit);
    dlg.addEventListener('cancel', (e) => e.preventDefault()); // no data without a token
    if (!dlg.open) dlg.showModal();
    input.focus();
  });
  return asking;
}

// refused forgets a token the server rejected and asks again.
export function refused() {
  if (token) {
    token = '';
    sessionStorage.removeItem(KEY);
    return askToken('The server refused that token.');
  }
  return askToken();
}

// getJSON fetches path with the token. A 401 asks for the token and
// retries; a 404 returns null when allow404 (optional endpoints).
export async function getJSON(path, { allow404 = false } = {}) {
  for (;;) {
    const r = await fetch(path, { headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' });
    if (r.status === 401) { await refused(); continue; }
    if (r.status === 404 && allow404) return null;
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }
}
