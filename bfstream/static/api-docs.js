// Starts Swagger UI on /docs. Apart from the page so the page's policy needs no inline script;
// the viewer is bfstream's own copy (static/vendor/swagger-ui, with its licence), so /docs works
// without the internet. No validator: it would send the document to another origin.
SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
