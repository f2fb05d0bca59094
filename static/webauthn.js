// Tessera's one script: passkey ceremonies (WebAuthn) on the login, second-factor and account
// pages. A form marked data-passkey="create" or "get" stays hidden unless this browser has
// WebAuthn; on submit, the script posts the form's CSRF token to data-options, hands the options
// to navigator.credentials, puts the authenticator's answer (JSON, base64url fields) in the
// form's "credential" field, and submits the form as usual. Nothing else runs here.
(function () {
  'use strict';
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  function encode(buffer) {
    var bytes = new Uint8Array(buffer), text = '';
    for (var i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
    return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function decode(text) {
    var base64 = text.replace(/-/g, '+').replace(/_/g, '/');
    var raw = atob(base64 + '==='.slice((base64.length + 3) % 4));
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  function ids(list) {
    (list || []).forEach(function (c) { c.id = decode(c.id); });
  }

  function creation(options) {
    var o = options.publicKey;
    o.challenge = decode(o.challenge);
    o.user.id = decode(o.user.id);
    ids(o.excludeCredentials);
    return { publicKey: o };
  }

  function request(options) {
    var o = options.publicKey;
    o.challenge = decode(o.challenge);
    ids(o.allowCredentials);
    return { publicKey: o };
  }

  function answer(credential) {
    var r = credential.response;
    var out = {
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      extensions: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
      response: { clientDataJSON: encode(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      out.response.attestationObject = encode(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = encode(r.authenticatorData);
      out.response.signature = encode(r.signature);
      out.response.userHandle = r.userHandle ? encode(r.userHandle) : null;
    }
    return JSON.stringify(out);
  }

  document.querySelectorAll('form[data-passkey]').forEach(function (form) {
    var status = form.querySelector('.passkey-status');
    form.hidden = false;
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      if (status) status.textContent = '';
      var body = new URLSearchParams();
      body.set('csrf_token', form.elements.csrf_token.value);
      fetch(form.dataset.options, { method: 'POST', body: body, credentials: 'same-origin' })
        .then(function (res) {
          if (!res.ok) throw new Error('the server answered ' + res.status);
          return res.json();
        })
        .then(function (options) {
          return form.dataset.passkey === 'create'
            ? navigator.credentials.create(creation(options))
            : navigator.credentials.get(request(options));
        })
        .then(function (credential) {
          form.elements.credential.value = answer(credential);
          form.submit();
        })
        .catch(function (error) {
          if (status) status.textContent = 'The passkey did not work (' + (error && error.message || error) + '). Try again.';
        });
    });
  });
})();
